"""Job outputs: work a worker does on a trained job's checkpoint, through the queue (batch
predictions, export bundles). Each output has its own small state machine, fenced by its
attempt number like a job's:

queued -> running (claim: attempt + 1, lease) -> succeeded | failed | cancelled
running -> queued (its worker was lost and attempts are left)
queued -> cancelled (cancel before any worker claimed it)

Every write by a running attempt (progress, the final status) is one conditional UPDATE on
the output's id, attempt and status, so a zombie or a duplicate delivery never writes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from shared.infra.db import Database, affected_rows
from shared.infra.models import JobOutput, utcnow
from shared.jobs.errors import Fenced, InvalidTransition
from shared.protocol import TERMINAL_STATUSES, JobStatus

CANCELLED_BY_USER = "cancelled by user"
# The columns a finished output may set beside its status.
RESULT_FIELDS = frozenset(
    {"uri", "filename", "content_type", "sha256", "bytes", "summary", "error", "rows_done"}
)


class OutputNotFound(LookupError):
    def __init__(self, output_id: int) -> None:
        super().__init__(f"output {output_id} not found")
        self.output_id = output_id


def create_output(
    db: Database,
    *,
    job_id: int,
    owner_id: int | None,
    kind: str,
    params: dict[str, Any],
    queue: str,
    checkpoint_id: int | None,
    dataset_id: int | None = None,
    max_attempts: int = 3,
) -> JobOutput:
    """A queued output (committed: enqueue its id after this returns)."""
    with db.session() as session:
        output = JobOutput(
            job_id=job_id,
            owner_id=owner_id,
            kind=kind,
            params=params,
            queue=queue,
            checkpoint_id=checkpoint_id,
            dataset_id=dataset_id,
            max_attempts=max_attempts,
            status=JobStatus.QUEUED,
            attempt=0,
            rows_done=0,
            summary={},
            cancel_requested=False,
            enqueued_at=utcnow(),
        )
        session.add(output)
        session.flush()
        session.expunge(output)
        return output


def get_output(db: Database, output_id: int) -> JobOutput:
    with db.session() as session:
        output = session.get(JobOutput, output_id)
        if output is None:
            raise OutputNotFound(output_id)
        session.expunge(output)
        return output


def list_outputs(db: Database, job_id: int) -> list[JobOutput]:
    """The job's outputs, newest first."""
    with db.session() as session:
        rows = list(
            session.scalars(
                select(JobOutput).where(JobOutput.job_id == job_id).order_by(JobOutput.id.desc())
            )
        )
        session.expunge_all()
        return rows


def claim_output(db: Database, output_id: int, worker: str, lease_seconds: float) -> int | None:
    """queued -> running with attempt + 1 in one UPDATE. Returns the new attempt, or None."""
    now = utcnow()
    with db.session() as session:
        attempt: int | None = session.execute(
            update(JobOutput)
            .where(JobOutput.id == output_id, JobOutput.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                attempt=JobOutput.attempt + 1,
                lease_owner=worker,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=func.coalesce(JobOutput.started_at, now),
                error=None,
            )
            .returning(JobOutput.attempt)
        ).scalar_one_or_none()
        return attempt


def _running(output_id: int, attempt: int) -> Any:
    return (
        JobOutput.id == output_id,
        JobOutput.attempt == attempt,
        JobOutput.status == JobStatus.RUNNING,
    )


def output_progress(
    db: Database, output_id: int, attempt: int, rows_done: int, rows_total: int | None
) -> bool:
    """Record the rows done so far; returns whether a cancel was requested. Raises Fenced
    when `attempt` no longer runs the output."""
    with db.session() as session:
        cancel = session.execute(
            update(JobOutput)
            .where(*_running(output_id, attempt))
            .values(rows_done=rows_done, rows_total=rows_total)
            .returning(JobOutput.cancel_requested)
        ).scalar_one_or_none()
    if cancel is None:
        raise Fenced(f"output {output_id} attempt {attempt} no longer owns the output")
    return bool(cancel)


def renew_output_lease(db: Database, output_id: int, attempt: int, lease_seconds: float) -> bool:
    with db.session() as session:
        return bool(
            affected_rows(
                session.execute(
                    update(JobOutput)
                    .where(*_running(output_id, attempt))
                    .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
                )
            )
        )


def poll_output(db: Database, output_id: int, attempt: int) -> tuple[bool, bool]:
    """(still owned by this attempt, cancel requested) -- the supervisor's cheap poll."""
    with db.session() as session:
        row = session.execute(
            select(JobOutput.status, JobOutput.attempt, JobOutput.cancel_requested).where(
                JobOutput.id == output_id
            )
        ).one_or_none()
    if row is None:
        return False, False
    return row.status == JobStatus.RUNNING and row.attempt == attempt, bool(row.cancel_requested)


def finish_output(
    db: Database, output_id: int, attempt: int, status: JobStatus, **fields: Any
) -> bool:
    """running -> succeeded | failed | cancelled for this attempt only, with the result's
    columns (RESULT_FIELDS). False when fenced out."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"not a terminal status: {status}")
    unknown = set(fields) - RESULT_FIELDS
    if unknown:
        raise ValueError(f"not an output's result field: {', '.join(sorted(unknown))}")
    with db.session() as session:
        return bool(
            affected_rows(
                session.execute(
                    update(JobOutput)
                    .where(*_running(output_id, attempt))
                    .values(
                        status=status,
                        finished_at=utcnow(),
                        lease_owner=None,
                        lease_expires_at=None,
                        **fields,
                    )
                )
            )
        )


def requeue_output(db: Database, output_id: int, attempt: int) -> JobStatus | None:
    """running -> queued for this attempt (its worker is shutting down); a cancel asked
    meanwhile is honoured instead. None when fenced out."""
    with db.session() as session:
        done = affected_rows(
            session.execute(
                update(JobOutput)
                .where(*_running(output_id, attempt), JobOutput.cancel_requested.is_(False))
                .values(
                    status=JobStatus.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    enqueued_at=utcnow(),
                )
            )
        )
    if done:
        return JobStatus.QUEUED
    if finish_output(db, output_id, attempt, JobStatus.CANCELLED, error=CANCELLED_BY_USER):
        return JobStatus.CANCELLED
    return None


def cancel_output(db: Database, output_id: int) -> JobOutput:
    """Cancel a queued output at once; flag a running one for its supervisor. Raises
    InvalidTransition when it has already ended."""
    with db.session() as session:
        output = session.get(JobOutput, output_id)
        if output is None:
            raise OutputNotFound(output_id)
        if output.status in TERMINAL_STATUSES:
            raise InvalidTransition(f"output {output_id} is already {output.status}")
        done = affected_rows(
            session.execute(
                update(JobOutput)
                .where(JobOutput.id == output_id, JobOutput.status == JobStatus.QUEUED)
                .values(
                    status=JobStatus.CANCELLED,
                    cancel_requested=True,
                    finished_at=utcnow(),
                    error=CANCELLED_BY_USER,
                )
            )
        )
        if not done:
            session.execute(
                update(JobOutput)
                .where(JobOutput.id == output_id, JobOutput.status == JobStatus.RUNNING)
                .values(cancel_requested=True)
            )
    return get_output(db, output_id)


# ---------------------------------------------------------------- recovery (the reconciler)


def expired_output_leases(db: Database, limit: int = 100) -> list[tuple[int, int]]:
    """(output id, attempt) of running outputs whose lease has run out: their worker is gone."""
    with db.session() as session:
        rows = session.execute(
            select(JobOutput.id, JobOutput.attempt)
            .where(JobOutput.status == JobStatus.RUNNING, JobOutput.lease_expires_at < utcnow())
            .order_by(JobOutput.id)
            .limit(limit)
        ).all()
    return [(row.id, row.attempt) for row in rows]


def recover_expired_output(db: Database, output_id: int, attempt: int) -> JobStatus | None:
    """Take back a running attempt whose lease expired: requeue it (attempts left), fail it
    (none left) or cancel it (a cancel was asked). None when it was not expired."""
    with db.session() as session:
        output = session.get(JobOutput, output_id)
        if output is None or output.status != JobStatus.RUNNING or output.attempt != attempt:
            return None
        lost = f"worker {output.lease_owner or 'unknown'} lost (lease expired) on attempt {attempt}"
        values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
        if output.cancel_requested:
            status = JobStatus.CANCELLED
            values.update(finished_at=utcnow(), error=f"{CANCELLED_BY_USER} ({lost})")
        elif attempt >= output.max_attempts:
            status = JobStatus.FAILED
            values.update(finished_at=utcnow(), error=f"{lost} of {output.max_attempts}; giving up")
        else:
            status = JobStatus.QUEUED
            values.update(enqueued_at=utcnow(), rows_done=0)
        done = affected_rows(
            session.execute(
                update(JobOutput)
                .where(*_running(output_id, attempt), JobOutput.lease_expires_at < utcnow())
                .values(status=status, **values)
            )
        )
        return status if done else None


def queued_outputs_awaiting_message(db: Database, grace_seconds: float) -> list[tuple[int, str]]:
    """(output id, queue) of outputs queued for over `grace_seconds`: each should have a
    message on Redis by now; the reconciler checks and enqueues the ones that do not."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with db.session() as session:
        rows = session.execute(
            select(JobOutput.id, JobOutput.queue)
            .where(JobOutput.status == JobStatus.QUEUED, JobOutput.enqueued_at < cutoff)
            .order_by(JobOutput.id)
            .limit(500)
        ).all()
    return [(row.id, row.queue) for row in rows]


def mark_outputs_enqueued(db: Database, output_ids: list[int]) -> None:
    if not output_ids:
        return
    with db.session() as session:
        session.execute(
            update(JobOutput)
            .where(JobOutput.id.in_(output_ids), JobOutput.status == JobStatus.QUEUED)
            .values(enqueued_at=utcnow())
        )
