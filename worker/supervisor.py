"""Run one attempt's trainer as a child process and record how it ended.

Training happens in a child (`python -m worker.trainer`, or torchrun's agent with one
rank per device, see worker.launch) in its own process group, never
in the Celery process: a crash or OOM kills only the child, GPU memory is freed when it
exits, and Celery's daemonic-process and CUDA-after-fork limits do not apply. The
supervisor polls SQL for the cancel flag and a preemption request, renews the lease,
enforces max_runtime, and stops the child with SIGTERM, then SIGKILL of the whole process
group (or, to requeue it, asks it to checkpoint first: a drain).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.exc import OperationalError

from shared import jobs
from shared.infra.db import Database
from shared.infra.storage import open_store
from shared.protocol import AttemptOutcome, ExitCode, JobStatus
from shared.settings import Settings
from shared.spec import JobSpec
from worker import devices
from worker.launch import NodePlan, trainer_command
from worker.logship import LogShipper, finish_log, trainer_log

if TYPE_CHECKING:
    from worker.forkserver.client import ForkServer

LOG_TAIL_LINES = 20
log = logging.getLogger(__name__)
# How long a draining trainer may take to save its checkpoint before it is stopped.
DRAIN_GRACE_SECONDS = 60.0
# How long the supervisor keeps retrying its final write while the database is down.
FINAL_WRITE_SECONDS = 300.0


class Trainer(Protocol):
    """A trainer child: a `subprocess.Popen`, or one forked by the warm fork-server."""

    pid: int
    returncode: int | None

    def wait(self, timeout: float | None = None) -> int: ...

    def poll(self) -> int | None: ...


@dataclass
class Outcome:
    # RETRY only until it is recorded: it becomes REQUEUED, FAILED, CANCELLED or FENCED.
    status: AttemptOutcome
    message: str
    returncode: int | None
    # The waiting job this attempt was checkpointed and requeued for (preemption).
    preempted_by: int | None = None


OWNED_BY_ANOTHER = "another attempt owns the job"
CANCELLED_BY_USER = "cancelled by user"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_group(proc: Trainer, grace: float) -> None:
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
    spec: JobSpec,
    shutting_down: threading.Event | None = None,
    node: NodePlan | None = None,
    forkserver: ForkServer | None = None,
) -> Outcome:
    """Run the trainer for a claimed attempt of the job (whose `spec` the caller has read)
    until it ends; record the final status; return it. With `node` (node 0 of a multi-node
    attempt) the trainer is this node's share of the ranks; with the worker's `forkserver`
    a single-device trainer is forked from it once it is warm."""
    actor = settings.worker_name
    deadline = (
        time.monotonic() + spec.resources.max_runtime_seconds
        if spec.resources.max_runtime_seconds
        else None
    )
    proc, log_path, shipper = _start(settings, job_id, attempt, spec, node, forkserver)
    try:
        returncode, reason = _watch(
            db, settings, proc, job_id, attempt, deadline, spec, shutting_down
        )
    except BaseException:
        # The supervisor itself failed (e.g. the database vanished): never leave an
        # unsupervised trainer behind. The lease expires and the job is recovered.
        stop_group(proc, settings.kill_grace_seconds)
        finish_log(shipper, log_path)
        raise
    # Reap anything the trainer started and left behind in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)

    if reason is None:
        reason = classify_exit(returncode, log_path)
        failed = reason.status == AttemptOutcome.FAILED
        if node is not None and failed and returncode != ExitCode.FAILED:
            # One node's ranks failing breaks the collectives of all: most often a node that
            # was lost, which another attempt survives.
            reason = Outcome(
                AttemptOutcome.RETRY,
                f"a rank of the {node.nodes}-node run failed (exit code {returncode}; a node "
                f"lost, or a crash):\n{tail(log_path)}",
                returncode,
            )
    reason.returncode = returncode
    if returncode != 0:
        _remove_orphans(db, settings, job_id, attempt)
    # The archive is whole before the attempt is seen ended (the lease held meanwhile).
    renew = functools.partial(_renew, db, settings, job_id, attempt)
    finish_log(shipper, log_path, renew, settings.heartbeat_seconds)
    return record(db, job_id, attempt, reason, actor)


def _remove_orphans(db: Database, settings: Settings, job_id: int, attempt: int) -> None:
    """A trainer stopped mid-checkpoint may have uploaded an object whose row it never
    wrote; its process group is gone, so no writer of this attempt remains."""
    from worker.reconciler import remove_orphan_checkpoints

    try:
        removed = remove_orphan_checkpoints(db, open_store(settings), job_id, 0.0, attempt)
    except Exception as exc:  # the reconciler's sweep catches what this misses
        log.warning("job %s: orphan checkpoints not removed: %s", job_id, exc)
        return
    for key in removed:
        log.info("job %s: removed %s, a checkpoint without its row", job_id, key)


def follow(
    db: Database,
    settings: Settings,
    job_id: int,
    attempt: int,
    node: NodePlan,
    shutting_down: threading.Event | None = None,
) -> str:
    """Run node `node.node_rank` (> 0) of a multi-node attempt until its ranks exit, or stop
    them once the attempt is over (finished, cancelled, taken back) or this worker shuts
    down. Node 0 records the job's status; a follower never writes it. Returns what
    happened, for the log."""
    spec = JobSpec.model_validate(jobs.get_job(db, job_id).spec)
    proc, log_path, shipper = _start(settings, job_id, attempt, spec, node)
    try:
        ended = _follow_watch(db, settings, proc, job_id, attempt, shutting_down)
    except BaseException:
        stop_group(proc, settings.kill_grace_seconds)
        finish_log(shipper, log_path)
        raise
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    finish_log(shipper, log_path)
    return ended


def _start(
    settings: Settings,
    job_id: int,
    attempt: int,
    spec: JobSpec,
    node: NodePlan | None,
    forkserver: ForkServer | None = None,
) -> tuple[Trainer, Path, LogShipper | None]:
    """Start the attempt's trainer child (this node's ranks); returns it, its log file and,
    with a remote store, the shipper that follows the file into Redis and the store."""
    store = open_store(settings)
    log_path, shipper = trainer_log(settings, store, job_id, attempt, node.node_rank if node else 0)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        ARTIFACT_ROOT=store.url,
        SEQTRAIN_SUPERVISOR_PID=str(os.getpid()),
        PYTHONUNBUFFERED="1",
    )
    argv, overrides = trainer_command(spec, job_id, attempt, devices.probe_once(settings), node)
    env.update(overrides)
    proc: Trainer | None = None
    if forkserver is not None and spec.resources.devices <= 1 and node is None:
        # A child of the warm fork-server: torch is imported, the first step is near.
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
        proc = forkserver.start_trainer(job_id, attempt, changed, log_path)
    if proc is None:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: we can signal all of it
            )
    return proc, log_path, shipper


def _follow_watch(
    db: Database,
    settings: Settings,
    proc: Trainer,
    job_id: int,
    attempt: int,
    shutting_down: threading.Event | None,
) -> str:
    while True:
        try:
            return f"ranks exited with code {proc.wait(timeout=settings.cancel_poll_seconds)}"
        except subprocess.TimeoutExpired:
            pass
        try:
            owned, cancel, _ = jobs.poll_running(db, job_id, attempt)
        except OperationalError:
            continue  # node 0 decides; its lease covers the attempt
        if not owned:
            ended = "the attempt is over"
        elif cancel:
            ended = CANCELLED_BY_USER
        elif shutting_down is not None and shutting_down.is_set():
            ended = "worker shutting down"
        else:
            continue
        stop_group(proc, settings.kill_grace_seconds)
        return f"stopped: {ended}"


def classify_exit(returncode: int, log_path: Path) -> Outcome:
    """What a trainer's exit means when nobody asked it to stop."""
    if returncode == 0:
        return Outcome(AttemptOutcome.SUCCEEDED, "training finished", returncode)
    if returncode == ExitCode.FENCED:
        return Outcome(AttemptOutcome.FENCED, OWNED_BY_ANOTHER, returncode)
    if returncode == ExitCode.DRAINED:
        message = "trainer stopped after a checkpoint; requeued"
        return Outcome(AttemptOutcome.REQUEUED, message, returncode)
    if returncode == ExitCode.FAILED:
        return Outcome(AttemptOutcome.FAILED, error_line(log_path) or tail(log_path), returncode)
    if returncode == ExitCode.PAUSED:
        message = paused_line(log_path) or "paused at a decision point of its sweep"
        return Outcome(AttemptOutcome.PAUSED, message, returncode)
    if returncode < 0:  # killed from outside (the kernel's OOM killer, an operator): retry
        detail = tail(log_path, 5)
        what = " (SIGKILL: out of memory, or killed by an operator)" if returncode == -9 else ""
        message = f"trainer killed by signal {-returncode}{what}" + (
            f":\n{detail}" if detail else ""
        )
        return Outcome(AttemptOutcome.RETRY, message, returncode)
    if returncode == ExitCode.RETRY:
        return Outcome(AttemptOutcome.RETRY, error_line(log_path) or tail(log_path), returncode)
    return Outcome(
        AttemptOutcome.FAILED,
        f"trainer crashed (exit code {returncode}):\n{tail(log_path)}",
        returncode,
    )


def paused_line(log_path: Path) -> str:
    """The trainer's last `paused: ...` line (where it stopped), without the prefix."""
    for line in reversed(tail(log_path, 50).splitlines()):
        if line.startswith("paused: "):
            return line.removeprefix("paused: ")
    return ""


def error_line(log_path: Path) -> str:
    """The trainer's last `error: ...` line (its own account of a failure), without the prefix."""
    for line in reversed(tail(log_path, 200).splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return ""


def record(db: Database, job_id: int, attempt: int, reason: Outcome, actor: str) -> Outcome:
    """Record how the attempt ended (waiting out a database outage for a while)."""
    return _with_retries(lambda: _record(db, job_id, attempt, reason, actor))


def _record(db: Database, job_id: int, attempt: int, reason: Outcome, actor: str) -> Outcome:
    """Write the attempt's end and say what it became. A write refused because another
    attempt owns the job is reported as FENCED, whatever the attempt meant to record."""
    status = reason.status
    if status in _FINAL:
        if not jobs.finish(db, job_id, attempt, _FINAL[status], reason.message, actor):
            return Outcome(AttemptOutcome.FENCED, OWNED_BY_ANOTHER, reason.returncode)
        return reason
    if status == AttemptOutcome.REQUEUED:
        preempted = reason.preempted_by is not None
        ended = jobs.requeue(db, job_id, attempt, reason.message, actor, preempted=preempted)
    elif status == AttemptOutcome.RETRY:
        ended = jobs.requeue_or_fail(db, job_id, attempt, reason.message, actor)
    elif status == AttemptOutcome.PAUSED:
        ended = jobs.pause(db, job_id, attempt, reason.message, actor)
    else:
        return reason  # FENCED: nothing to write
    if ended is None:
        return Outcome(AttemptOutcome.FENCED, OWNED_BY_ANOTHER, reason.returncode)
    if ended == JobStatus.CANCELLED:
        return Outcome(AttemptOutcome.CANCELLED, CANCELLED_BY_USER, reason.returncode)
    outcome = AttemptOutcome.REQUEUED if ended == JobStatus.QUEUED else AttemptOutcome(ended)
    return Outcome(outcome, reason.message, reason.returncode)


# The outcomes that end the job, and the status each records.
_FINAL = {
    AttemptOutcome.SUCCEEDED: JobStatus.SUCCEEDED,
    AttemptOutcome.FAILED: JobStatus.FAILED,
    AttemptOutcome.CANCELLED: JobStatus.CANCELLED,
}


def _with_retries(write: Callable[[], Outcome]) -> Outcome:
    """Run the final status write, waiting out a database outage for a while. If it never
    comes back, the lease expires and the reconciler recovers the job."""
    deadline = time.monotonic() + FINAL_WRITE_SECONDS
    delay = 0.5
    while True:
        try:
            return write()
        except OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _watch(
    db: Database,
    settings: Settings,
    proc: Trainer,
    job_id: int,
    attempt: int,
    deadline: float | None,
    spec: JobSpec,
    shutting_down: threading.Event | None,
) -> tuple[int, Outcome | None]:
    """Wait for the trainer, polling cancel, lease, deadline and shutdown; stop it if needed."""
    next_heartbeat = time.monotonic() + settings.heartbeat_seconds
    next_outage_note = 0.0
    reason: Outcome | None = None
    while True:
        try:
            return proc.wait(timeout=settings.cancel_poll_seconds), None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        try:
            owned, cancel, preempt_by = jobs.poll_running(db, job_id, attempt)
        except OperationalError as exc:
            # The database is down: training goes on (the trainer buffers its metrics);
            # the lease is renewed once it is back.
            if now >= next_outage_note:
                log.warning("job %s: database unreachable: %s", job_id, exc.orig)
                next_outage_note = now + 10
            continue
        if not owned:
            reason = Outcome(AttemptOutcome.FENCED, OWNED_BY_ANOTHER, None)
        elif cancel:
            reason = Outcome(AttemptOutcome.CANCELLED, CANCELLED_BY_USER, None)
        elif deadline is not None and now >= deadline:
            reason = Outcome(
                AttemptOutcome.FAILED,
                f"max_runtime_seconds ({spec.resources.max_runtime_seconds} s) exceeded",
                None,
            )
        elif shutting_down is not None and shutting_down.is_set():
            return drain(proc, settings, lambda: _renew(db, settings, job_id, attempt)), Outcome(
                AttemptOutcome.REQUEUED, "worker shutting down; job checkpointed and requeued", None
            )
        elif preempt_by is not None:
            message = f"preempted by job {preempt_by}; checkpointed and requeued"
            return drain(proc, settings, lambda: _renew(db, settings, job_id, attempt)), Outcome(
                AttemptOutcome.REQUEUED, message, None, preempted_by=preempt_by
            )
        elif now >= next_heartbeat:
            with contextlib.suppress(OperationalError):
                jobs.renew_lease(db, job_id, attempt, settings.lease_seconds)
                next_heartbeat = now + settings.heartbeat_seconds
        if reason is not None:
            stop_group(proc, settings.kill_grace_seconds)
            return proc.returncode, reason


def drain(proc: Trainer, settings: Settings, renew: Callable[[], None]) -> int:
    """Ask the trainer to save a checkpoint at its next step and exit (SIGUSR1); stop it if
    it takes longer than the drain grace. The lease is renewed meanwhile: a checkpoint that
    takes longer than a lease must not let the reconciler take the attempt back."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + DRAIN_GRACE_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            return proc.wait(timeout=min(left, settings.heartbeat_seconds))
        except subprocess.TimeoutExpired:
            renew()
    stop_group(proc, settings.kill_grace_seconds)
    return proc.returncode


def _renew(db: Database, settings: Settings, job_id: int, attempt: int) -> None:
    with contextlib.suppress(OperationalError):
        jobs.renew_lease(db, job_id, attempt, settings.lease_seconds)
