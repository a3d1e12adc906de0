"""Every change of a job's status: cancel, claim, lease renewal, finish, requeue and the
recovery of lost attempts, plus the writes fenced by the attempt (metrics, checkpoints)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.infra.db import Database, affected_rows
from shared.infra.models import Checkpoint, Job, JobNode, Metric, User, utcnow
from shared.jobs.errors import Fenced, InvalidTransition, JobNotFound
from shared.jobs.events import add_event
from shared.jobs.queries import get_job
from shared.jobs.ranking import decayed, running_usage
from shared.jobs.scheduler import claim_in
from shared.protocol import TERMINAL_STATUSES, JobStatus

CANCELLED_BY_USER = "cancelled by user"
# Statuses a cancel ends at once: no attempt is running.
WAITING = (JobStatus.QUEUED, JobStatus.PAUSED)


def _end_attempt(session: Session, job_id: int, attempt: int) -> None:
    """An attempt that stops running gives up its node reservations in the same
    transaction, so no reader sees a finished or requeued job still holding workers; its
    device time is charged to its owner's usage (fair share) and a request to make room
    for another job lapses with it."""
    session.execute(delete(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt))
    row = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(preempt_by=None)
        .returning(Job.owner_id, Job.devices, Job.nodes, Job.claimed_at)
    ).one_or_none()
    if row is None or row.owner_id is None or row.claimed_at is None:
        return
    now = utcnow()
    used = running_usage(row.devices, row.nodes, row.claimed_at, now.timestamp())
    user = session.execute(
        select(User).where(User.id == row.owner_id).with_for_update()
    ).scalar_one_or_none()
    if user is not None:
        user.usage = decayed(user.usage, user.usage_at, now.timestamp()) + used
        user.usage_at = now


def request_cancel(db: Database, job_id: int, actor: str) -> Job:
    """Cancel a queued (or paused) job at once; flag a running one for its supervisor (seen within a
    second). Repeated or concurrent cancels answer with the job and write nothing more."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status in TERMINAL_STATUSES:
            raise InvalidTransition(f"job {job_id} is already {job.status}")
        done = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == job.status, Job.status.in_(WAITING))
                .values(
                    status=JobStatus.CANCELLED,
                    finished_at=utcnow(),
                    cancel_requested=True,
                    error=CANCELLED_BY_USER,
                )
            )
        )
        if done:
            add_event(
                session,
                job_id,
                job.attempt,
                JobStatus(job.status),
                JobStatus.CANCELLED,
                actor,
                CANCELLED_BY_USER,
            )
        else:
            # One event however many cancels arrive: only the request that sets the flag
            # notes it (the row lock orders concurrent ones; the rest match no row).
            attempt = session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status == JobStatus.RUNNING,
                    Job.cancel_requested.is_(False),
                )
                .values(cancel_requested=True)
                .returning(Job.attempt)
            ).scalar_one_or_none()
            if attempt is not None:
                add_event(session, job_id, attempt, None, None, actor, "cancel requested")
    return get_job(db, job_id)


def claim(db: Database, job_id: int, worker: str, lease_seconds: float) -> int | None:
    """queued -> running with attempt + 1 in one UPDATE. Returns the new attempt, or None.
    (A worker takes the best job with shared.jobs.scheduler.next_work; this claims one.)"""
    with db.session() as session:
        return claim_in(session, job_id, worker, lease_seconds)


@contextmanager
def fenced(db: Database, job_id: int, attempt: int, **progress: int) -> Iterator[Session]:
    """A transaction that commits only while `attempt` still runs the job.

    The conditional UPDATE takes the job's row lock first, so no claim or finish by anyone
    else can interleave with the writes made inside the block.
    """
    with db.session() as session:
        owned = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
                .values(updated_at=utcnow(), **progress)
            )
        )
        if not owned:
            raise Fenced(f"job {job_id} attempt {attempt} no longer owns the job")
        yield session


def note_attempt(db: Database, job_id: int, attempt: int, message: str) -> None:
    """An event by a running attempt, fenced like its other writes."""
    with fenced(db, job_id, attempt) as session:
        add_event(session, job_id, attempt, None, None, f"attempt {attempt}", message)


def renew_lease(db: Database, job_id: int, attempt: int, lease_seconds: float) -> bool:
    with db.session() as session:
        return bool(
            affected_rows(
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING
                    )
                    .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
                )
            )
        )


class Poll(NamedTuple):
    """The supervisor's cheap poll of its attempt."""

    owned: bool  # the attempt still runs the job
    cancel: bool  # a cancel was requested
    preempt_by: int | None = None  # a waiting job asks this attempt to make room


def poll_running(db: Database, job_id: int, attempt: int) -> Poll:
    with db.session() as session:
        row = session.execute(
            select(Job.status, Job.attempt, Job.cancel_requested, Job.preempt_by).where(
                Job.id == job_id
            )
        ).one_or_none()
    if row is None:
        return Poll(False, False)
    owned = row.status == JobStatus.RUNNING and row.attempt == attempt
    return Poll(owned, bool(row.cancel_requested), row.preempt_by if owned else None)


def finish(
    db: Database, job_id: int, attempt: int, status: JobStatus, message: str, actor: str
) -> bool:
    """running -> succeeded | failed | cancelled for this attempt only. False if fenced out."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"not a terminal status: {status}")
    with db.session() as session:
        done = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
                .values(
                    status=status,
                    finished_at=utcnow(),
                    lease_owner=None,
                    lease_expires_at=None,
                    error=None if status == JobStatus.SUCCEEDED else message,
                )
            )
        )
        if done:
            add_event(session, job_id, attempt, JobStatus.RUNNING, status, actor, message)
            _end_attempt(session, job_id, attempt)
        return bool(done)


def requeue(
    db: Database, job_id: int, attempt: int, message: str, actor: str, *, preempted: bool = False
) -> JobStatus | None:
    """running -> queued for this attempt only (drain); the next claim resumes from a checkpoint.
    The job keeps its rank key: it waits at the head of its level. `preempted`: it made
    room for another job, and that counts towards SEQTRAIN_MAX_PREEMPTIONS.

    Returns the status the attempt left the job in: QUEUED; CANCELLED when a cancel was
    requested (honoured instead of the requeue); None when the attempt no longer owns the
    job (fenced: nothing was written, and nobody cancelled anything).
    """
    values: dict[str, Any] = {"enqueued_at": utcnow()}
    if preempted:
        values["preemptions"] = Job.preemptions + 1
    return leave_running(db, job_id, attempt, JobStatus.QUEUED, message, actor, **values)


def leave_running(
    db: Database,
    job_id: int,
    attempt: int,
    status: JobStatus,
    message: str,
    actor: str,
    **values: Any,
) -> JobStatus | None:
    """running -> `status` (queued, paused: not an end) for this attempt only, with the lease
    cleared and `values` set. CANCELLED instead when a cancel was requested; None when the
    attempt no longer owns the job."""
    with db.session() as session:
        done = affected_rows(
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.attempt == attempt,
                    Job.status == JobStatus.RUNNING,
                    Job.cancel_requested.is_(False),
                )
                .values(status=status, lease_owner=None, lease_expires_at=None, **values)
            )
        )
        if done:
            add_event(session, job_id, attempt, JobStatus.RUNNING, status, actor, message)
            _end_attempt(session, job_id, attempt)
            return status
    # Still this attempt's and running, the change can only have been refused for the
    # cancel flag; a fenced attempt's finish is refused as well.
    if finish(db, job_id, attempt, JobStatus.CANCELLED, CANCELLED_BY_USER, actor):
        return JobStatus.CANCELLED
    return None


def write_metrics(
    db: Database,
    job_id: int,
    attempt: int,
    rows: Sequence[dict[str, Any]],
    epoch: int,
    step: int,
) -> None:
    """Insert metric rows (dicts of step, epoch, split, name, value) fenced by the attempt."""
    with fenced(db, job_id, attempt, epoch=epoch, step=step) as session:
        session.add_all(Metric(job_id=job_id, attempt=attempt, **row) for row in rows)


def add_checkpoint(
    db: Database,
    job_id: int,
    attempt: int,
    *,
    step: int,
    epoch: int,
    uri: str,
    sha256: str,
    size: int,
    metrics: dict[str, float],
    keep_last: int,
    is_best: bool = False,
) -> list[str]:
    """Record a checkpoint and drop the oldest beyond `keep_last` (never the best); returns
    the dropped URIs."""
    with fenced(db, job_id, attempt, epoch=epoch, step=step) as session:
        if is_best:
            session.execute(
                update(Checkpoint).where(Checkpoint.job_id == job_id).values(is_best=False)
            )
        session.add(
            Checkpoint(
                job_id=job_id,
                attempt=attempt,
                step=step,
                epoch=epoch,
                uri=uri,
                sha256=sha256,
                bytes=size,
                metrics=metrics,
                is_best=is_best,
            )
        )
        session.flush()
        stale = list(
            session.scalars(
                select(Checkpoint)
                .where(Checkpoint.job_id == job_id)
                .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
                .offset(keep_last)
            )
        )
        stale = [c for c in stale if not c.is_best]
        for ckpt in stale:
            session.delete(ckpt)
        return [c.uri for c in stale]


# ---------------------------------------------------------------- recovery (the reconciler)


def expired_leases(db: Database, limit: int = 100) -> list[tuple[int, int]]:
    """(job id, attempt) of running jobs whose lease has run out: their worker is gone."""
    with db.session() as session:
        rows = session.execute(
            select(Job.id, Job.attempt)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < utcnow())
            .order_by(Job.id)
            .limit(limit)
        ).all()
    return [(row.id, row.attempt) for row in rows]


def _recovery(job: Job, attempt: int) -> tuple[JobStatus, str]:
    """What becomes of a lost attempt, and why."""
    owner = job.lease_owner or "unknown"
    if job.cancel_requested:
        return JobStatus.CANCELLED, f"{CANCELLED_BY_USER} (its worker was lost)"
    lost = f"worker {owner} lost (lease expired) on attempt {attempt} of {job.max_attempts}"
    if attempt >= job.max_attempts:
        return JobStatus.FAILED, f"{lost}; giving up"
    return JobStatus.QUEUED, f"{lost}; requeued to resume from the last checkpoint"


def recover_expired(db: Database, job_id: int, attempt: int, actor: str) -> JobStatus | None:
    """Take back a running attempt whose lease expired: requeue it (the next attempt resumes
    from the last checkpoint), fail it when it has used its `max_attempts`, or cancel it when
    a cancel was requested. Returns the new status, or None when the attempt was not expired
    (it renewed its lease, finished, or was already recovered)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.RUNNING or job.attempt != attempt:
            return None
        status, message = _recovery(job, attempt)
        values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None}
        if status == JobStatus.QUEUED:
            values["enqueued_at"] = utcnow()
        else:
            values.update(finished_at=utcnow(), error=message)
        done = affected_rows(
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.attempt == attempt,
                    Job.status == JobStatus.RUNNING,
                    Job.lease_expires_at < utcnow(),
                )
                .values(**values)
            )
        )
        if not done:
            return None
        add_event(session, job_id, attempt, JobStatus.RUNNING, status, actor, message)
        _end_attempt(session, job_id, attempt)
        return status


def requeue_or_fail(
    db: Database, job_id: int, attempt: int, reason: str, actor: str
) -> JobStatus | None:
    """After an attempt crashed: requeue it to resume (attempts left) or fail it with the
    reason. Returns the status it left the job in (QUEUED, FAILED, or CANCELLED when a
    cancel was requested), or None when the attempt was fenced (another owns the job)."""
    job = get_job(db, job_id)
    if job.status != JobStatus.RUNNING or job.attempt != attempt:
        return None
    if attempt >= job.max_attempts:
        message = f"{reason}\n(attempt {attempt} of {job.max_attempts}; giving up)"
        done = finish(db, job_id, attempt, JobStatus.FAILED, message, actor)
        return JobStatus.FAILED if done else None
    message = f"{reason}\n(attempt {attempt} of {job.max_attempts}; requeued to resume)"
    return requeue(db, job_id, attempt, message, actor)
