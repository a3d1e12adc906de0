"""A sweep trial's decision points: running -> paused when its trainer stopped at one
(evaluated, checkpointed), then paused -> queued (promoted: the next attempt resumes from
that checkpoint and trains to the next point) or paused -> pruned (final; the checkpoints
stay). Each is one conditional UPDATE plus an event, like every other transition."""

from __future__ import annotations

from sqlalchemy import update

from shared.infra.db import Database, affected_rows
from shared.infra.models import Job, utcnow
from shared.jobs.events import add_event
from shared.jobs.transitions import CANCELLED_BY_USER, _end_attempt, finish
from shared.protocol import JobStatus


def pause(db: Database, job_id: int, attempt: int, message: str, actor: str) -> JobStatus | None:
    """running -> paused for this attempt only. Returns PAUSED; CANCELLED when a cancel was
    requested meanwhile (honoured instead); None when the attempt no longer owns the job."""
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
                .values(status=JobStatus.PAUSED, lease_owner=None, lease_expires_at=None)
            )
        )
        if done:
            add_event(session, job_id, attempt, JobStatus.RUNNING, JobStatus.PAUSED, actor, message)
            _end_attempt(session, job_id, attempt)
            return JobStatus.PAUSED
    if finish(db, job_id, attempt, JobStatus.CANCELLED, CANCELLED_BY_USER, actor):
        return JobStatus.CANCELLED
    return None


def promote(
    db: Database,
    job_id: int,
    pause_at_step: int | None,
    pause_at_epoch: int | None,
    message: str,
    actor: str,
) -> bool:
    """paused -> queued with the next decision point (None, None: train to the end). The
    promotion is not a failure: it gets an attempt of its own on top of `max_attempts`."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.PAUSED:
            return False
        done = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.PAUSED)
                .values(
                    status=JobStatus.QUEUED,
                    pause_at_step=pause_at_step,
                    pause_at_epoch=pause_at_epoch,
                    max_attempts=Job.max_attempts + 1,
                    enqueued_at=utcnow(),
                )
            )
        )
        if done:
            add_event(
                session, job_id, job.attempt, JobStatus.PAUSED, JobStatus.QUEUED, actor, message
            )
        return bool(done)


def prune(db: Database, job_id: int, message: str, actor: str) -> bool:
    """paused -> pruned (final). Its checkpoints and metrics stay."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.PAUSED:
            return False
        done = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.PAUSED)
                .values(status=JobStatus.PRUNED, finished_at=utcnow(), error=None)
            )
        )
        if done:
            add_event(
                session, job_id, job.attempt, JobStatus.PAUSED, JobStatus.PRUNED, actor, message
            )
        return bool(done)
