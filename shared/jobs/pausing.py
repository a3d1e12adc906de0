"""A sweep trial's decision points: running -> paused when its trainer stopped at one
(evaluated, checkpointed), then paused -> queued (promoted: the next attempt resumes from
that checkpoint and trains to the next point) or paused -> pruned (final; the checkpoints
stay). Each is one conditional UPDATE plus an event, like every other transition."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from shared.infra.db import Database, affected_rows
from shared.infra.models import Job, utcnow
from shared.jobs.events import add_event
from shared.jobs.transitions import leave_running
from shared.protocol import JobStatus


def pause(db: Database, job_id: int, attempt: int, message: str, actor: str) -> JobStatus | None:
    """running -> paused for this attempt only. Returns PAUSED; CANCELLED when a cancel was
    requested meanwhile (honoured instead); None when the attempt no longer owns the job."""
    return leave_running(db, job_id, attempt, JobStatus.PAUSED, message, actor)


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
    return _leave_paused(
        db,
        job_id,
        JobStatus.QUEUED,
        message,
        actor,
        pause_at_step=pause_at_step,
        pause_at_epoch=pause_at_epoch,
        max_attempts=Job.max_attempts + 1,
        enqueued_at=utcnow(),
    )


def prune(db: Database, job_id: int, message: str, actor: str) -> bool:
    """paused -> pruned (final). Its checkpoints and metrics stay."""
    return _leave_paused(
        db, job_id, JobStatus.PRUNED, message, actor, finished_at=utcnow(), error=None
    )


def _leave_paused(
    db: Database, job_id: int, status: JobStatus, message: str, actor: str, **values: Any
) -> bool:
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.PAUSED:
            return False
        done = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.PAUSED)
                .values(status=status, **values)
            )
        )
        if done:
            add_event(session, job_id, job.attempt, JobStatus.PAUSED, status, actor, message)
        return bool(done)
