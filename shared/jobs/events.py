"""The job_events rows every transition and note leaves behind."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.infra.db import Database
from shared.infra.models import Job, JobEvent
from shared.protocol import JobStatus


def add_event(
    session: Session,
    job_id: int,
    attempt: int,
    from_status: JobStatus | None,
    to_status: JobStatus | None,
    actor: str,
    message: str = "",
) -> None:
    """Add one event row to the transaction that makes the change it records."""
    session.add(
        JobEvent(
            job_id=job_id,
            attempt=attempt,
            from_status=from_status,
            to_status=to_status,
            actor=actor,
            message=message,
        )
    )


def note_event(db: Database, job_id: int, actor: str, message: str) -> None:
    """An event that changes no status (e.g. an enqueue that failed and awaits the reconciler)."""
    with db.session() as session:
        attempt = session.scalar(select(Job.attempt).where(Job.id == job_id)) or 0
        add_event(session, job_id, attempt, None, None, actor, message)
