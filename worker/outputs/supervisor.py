"""seqtrain.run_output's body: claim the output, run its child, record how it ended.

The work (torch) runs in a child process in its own process group, never in the Celery
process, as training does. The supervisor renews the output's lease, polls its cancel flag
(SIGTERM, then SIGKILL of the group) and, when the child ended without finishing the row
itself, records the end from its exit code: the last `error: ...` line becomes the error;
an outage or a kill is retried while attempts are left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from shared import jobs
from shared.infra.db import Database
from shared.infra.queue import JobQueue
from shared.infra.storage import open_store
from shared.jobs.outputs import CANCELLED_BY_USER, poll_output, requeue_output
from shared.protocol import ExitCode, JobStatus
from shared.settings import Settings
from worker.supervisor import error_line, stop_group, tail

log = logging.getLogger(__name__)


def run_output_now(
    db: Database, settings: Settings, output_id: int, shutting_down: threading.Event | None = None
) -> str:
    """Claim and run one output; returns what happened (for the log)."""
    attempt = jobs.claim_output(db, output_id, settings.worker_name, settings.lease_seconds)
    if attempt is None:
        log.info("output %s: not claimable (already taken, finished or cancelled)", output_id)
        return "skipped"
    log.info("output %s: attempt %s started", output_id, attempt)
    proc, log_path = _start(settings, output_id, attempt)
    try:
        stopped = _watch(db, settings, proc, output_id, attempt, shutting_down)
    except BaseException:
        stop_group(proc, settings.kill_grace_seconds)  # never leave an unsupervised child
        raise
    ended = _record(db, settings, output_id, attempt, proc.returncode, stopped, log_path)
    log.info("output %s: attempt %s %s", output_id, attempt, ended)
    return ended


def _start(
    settings: Settings, output_id: int, attempt: int
) -> tuple[subprocess.Popen[bytes], Path]:
    store = open_store(settings)
    log_dir = settings.var_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"output-{output_id}-a{attempt}.log"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        ARTIFACT_ROOT=store.url,
        SEQTRAIN_SUPERVISOR_PID=str(os.getpid()),
        PYTHONUNBUFFERED="1",
        CUDA_VISIBLE_DEVICES="",  # predictors and exports run on the CPU
    )
    argv = [sys.executable, "-m", "worker.outputs", "--output-id", str(output_id)]
    with log_path.open("ab") as handle:
        proc = subprocess.Popen(
            [*argv, "--attempt", str(attempt)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: we can signal all of it
        )
    return proc, log_path


def _watch(
    db: Database,
    settings: Settings,
    proc: subprocess.Popen[bytes],
    output_id: int,
    attempt: int,
    shutting_down: threading.Event | None,
) -> str | None:
    """Wait for the child; stop it on cancel, fencing or shutdown (which of them: the
    return value; None when it exited by itself)."""
    next_heartbeat = time.monotonic() + settings.heartbeat_seconds
    while True:
        try:
            proc.wait(timeout=settings.cancel_poll_seconds)
            return None
        except subprocess.TimeoutExpired:
            pass
        try:
            owned, cancel = poll_output(db, output_id, attempt)
            if time.monotonic() >= next_heartbeat:
                jobs.renew_output_lease(db, output_id, attempt, settings.lease_seconds)
                next_heartbeat = time.monotonic() + settings.heartbeat_seconds
        except OperationalError:
            continue  # the lease covers a short outage; the child goes on meanwhile
        stop = (
            "fenced"
            if not owned
            else "cancelled"
            if cancel
            else "shutdown"
            if shutting_down is not None and shutting_down.is_set()
            else None
        )
        if stop is not None:
            stop_group(proc, settings.kill_grace_seconds)
            return stop


def _record(
    db: Database,
    settings: Settings,
    output_id: int,
    attempt: int,
    returncode: int | None,
    stopped: str | None,
    log_path: Path,
) -> str:
    """Write the end the child did not write itself; say what the output became."""
    owned, _ = poll_output(db, output_id, attempt)
    if not owned:  # the child finished the row (or another attempt owns it)
        return jobs.get_output(db, output_id).status if stopped is None else str(stopped)
    if stopped == "cancelled":
        jobs.finish_output(db, output_id, attempt, JobStatus.CANCELLED, error=CANCELLED_BY_USER)
        return JobStatus.CANCELLED
    if stopped == "shutdown" or returncode == ExitCode.RETRY or (returncode or 0) < 0:
        reason = error_line(log_path) or f"stopped (exit code {returncode})"
        return _retry(db, settings, output_id, attempt, reason, stopped == "shutdown")
    if returncode == ExitCode.FAILED:
        message = error_line(log_path) or tail(log_path)
    elif returncode == 0:
        message = "the output's process exited without a result"
    else:
        message = f"the output's process crashed (exit code {returncode}):\n{tail(log_path)}"
    jobs.finish_output(db, output_id, attempt, JobStatus.FAILED, error=message)
    return JobStatus.FAILED


def _retry(
    db: Database, settings: Settings, output_id: int, attempt: int, reason: str, drained: bool
) -> str:
    """Requeue the output (attempts left, or the worker is only shutting down) or fail it."""
    output = jobs.get_output(db, output_id)
    if not drained and attempt >= output.max_attempts:
        message = f"{reason}\n(attempt {attempt} of {output.max_attempts}; giving up)"
        jobs.finish_output(db, output_id, attempt, JobStatus.FAILED, error=message)
        return JobStatus.FAILED
    ended = requeue_output(db, output_id, attempt)
    if ended == JobStatus.QUEUED:
        with contextlib.suppress(Exception):  # else the reconciler enqueues it
            JobQueue(settings).enqueue_outputs([(output_id, output.queue)])
    return str(ended)
