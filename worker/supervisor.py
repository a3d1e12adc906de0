"""Run one attempt's trainer as a child process and record how it ended.

Training happens in a child (`python -m worker.trainer`) in its own process group, never
in the Celery process: a crash or OOM kills only the child, GPU memory is freed when it
exits, and Celery's daemonic-process and CUDA-after-fork limits do not apply. The
supervisor polls SQL for the cancel flag, renews the lease, enforces max_runtime, and
stops the child with SIGTERM, then SIGKILL of the whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared import jobs
from shared.db import Database
from shared.settings import Settings
from shared.spec import JobSpec
from shared.storage import ArtifactStore

EXIT_FENCED = 3  # worker.trainer.EXIT_FENCED; not imported: the supervisor never imports torch
LOG_TAIL_LINES = 20


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled | requeued | fenced
    message: str
    returncode: int | None


def log_key(job_id: int, attempt: int) -> str:
    return f"jobs/{job_id}/logs/attempt-{attempt}.log"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def supervise(
    db: Database,
    settings: Settings,
    job_id: int,
    attempt: int,
    shutting_down: threading.Event | None = None,
) -> Outcome:
    """Run the trainer for a claimed attempt until it ends; record the final status; return it."""
    actor = settings.worker_name
    spec = JobSpec.model_validate(jobs.get_job(db, job_id).spec)
    store = ArtifactStore(settings.artifact_root)
    log_path = store.path(log_key(job_id, attempt))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        ARTIFACT_ROOT=str(store.root),
        SEQTRAIN_SUPERVISOR_PID=str(os.getpid()),
        PYTHONUNBUFFERED="1",
    )
    deadline = (
        time.monotonic() + spec.resources.max_runtime_seconds
        if spec.resources.max_runtime_seconds
        else None
    )
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.trainer",
                "--job-id",
                str(job_id),
                "--attempt",
                str(attempt),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: we can signal all of it
        )
    try:
        returncode, reason = _watch(
            db, settings, proc, job_id, attempt, deadline, spec, shutting_down
        )
    except BaseException:
        # The supervisor itself failed (e.g. the database vanished): never leave an
        # unsupervised trainer behind. The lease expires and the job is recovered.
        stop_group(proc, settings.kill_grace_seconds)
        raise
    # Reap anything the trainer started and left behind in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)

    if reason is None:
        if returncode == 0:
            reason = Outcome("succeeded", "training finished", returncode)
        elif returncode == EXIT_FENCED:
            reason = Outcome("fenced", "another attempt owns the job", returncode)
        else:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            reason = Outcome("failed", f"trainer {how}:\n{tail(log_path)}".rstrip(), returncode)
    reason.returncode = returncode
    if reason.status in ("succeeded", "failed", "cancelled"):
        jobs.finish(db, job_id, attempt, reason.status, reason.message, actor)
    elif reason.status == "requeued" and not jobs.requeue(
        db, job_id, attempt, reason.message, actor
    ):
        reason = Outcome("cancelled", "cancelled by user", returncode)
    return reason


def _watch(
    db: Database,
    settings: Settings,
    proc: subprocess.Popen[bytes],
    job_id: int,
    attempt: int,
    deadline: float | None,
    spec: JobSpec,
    shutting_down: threading.Event | None,
) -> tuple[int, Outcome | None]:
    """Wait for the trainer, polling cancel, lease, deadline and shutdown; stop it if needed."""
    next_heartbeat = time.monotonic() + settings.heartbeat_seconds
    reason: Outcome | None = None
    while True:
        try:
            return proc.wait(timeout=settings.cancel_poll_seconds), None
        except subprocess.TimeoutExpired:
            pass
        owned, cancel = jobs.poll_running(db, job_id, attempt)
        now = time.monotonic()
        if not owned:
            reason = Outcome("fenced", "another attempt owns the job", None)
        elif cancel:
            reason = Outcome("cancelled", "cancelled by user", None)
        elif deadline is not None and now >= deadline:
            reason = Outcome(
                "failed",
                f"max_runtime_seconds ({spec.resources.max_runtime_seconds} s) exceeded",
                None,
            )
        elif shutting_down is not None and shutting_down.is_set():
            reason = Outcome("requeued", "worker shutting down; job requeued", None)
        elif now >= next_heartbeat:
            jobs.renew_lease(db, job_id, attempt, settings.lease_seconds)
            next_heartbeat = now + settings.heartbeat_seconds
        if reason is not None:
            stop_group(proc, settings.kill_grace_seconds)
            return proc.returncode, reason
