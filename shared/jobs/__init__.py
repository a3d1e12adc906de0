"""The job state machine. Every transition is one conditional UPDATE plus an event row.

queued -> running (claim: attempt + 1, lease) -> succeeded | failed | cancelled
running -> queued (worker drained or lost; the next claim resumes)
queued -> cancelled (cancel before any worker claimed it)

The attempt number is the fencing token: writes by an attempt (metrics, checkpoints,
final status) go through `fenced()`, which only succeeds while the job is still running
that attempt. A zombie or a duplicate delivery therefore never writes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.infra.db import Database, affected_rows
from shared.infra.models import (
    TERMINAL_STATUSES,
    Checkpoint,
    Dataset,
    Job,
    JobDataset,
    JobEvent,
    Metric,
    User,
    utcnow,
)
from shared.spec import JobSpec


class JobNotFound(LookupError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class InvalidTransition(Exception):
    """The job is not in a state that allows the requested change."""


class IdempotentReplay(Exception):
    """The owner already submitted a job with this Idempotency-Key."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"idempotency key already used by job {job.id}")
        self.job = job


class Fenced(Exception):
    """This attempt no longer owns the job: its writes are refused."""


def _event(
    session: Session,
    job_id: int,
    attempt: int,
    from_status: str | None,
    to_status: str | None,
    actor: str,
    message: str = "",
) -> None:
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


# ---------------------------------------------------------------- submit and read


@dataclass(frozen=True)
class NewJob:
    """One submission: a validated spec and what the API resolved for it."""

    spec: JobSpec
    owner_id: int | None
    actor: str = "api"
    # role (train | validation | test) -> the dataset version pinned at submit
    datasets: Mapping[str, int] = field(default_factory=dict)
    idempotency_key: str | None = None
    estimate: dict[str, Any] | None = None


def create_job(
    db: Database,
    spec: JobSpec,
    owner_id: int | None,
    actor: str = "api",
    datasets: dict[str, int] | None = None,
    idempotency_key: str | None = None,
    estimate: dict[str, Any] | None = None,
) -> Job:
    """Insert a queued job, its dataset links (role -> dataset id) and first event, and commit.

    Enqueue only after this returns. With an `idempotency_key` the owner already used,
    nothing is inserted and `IdempotentReplay` carries the earlier job.
    """
    if idempotency_key is not None:
        earlier = keyed_job(db, owner_id, idempotency_key)
        if earlier is not None:
            raise IdempotentReplay(earlier)
    new = NewJob(spec, owner_id, actor, datasets or {}, idempotency_key, estimate)
    result = submit_jobs(db, [new])[0]
    if isinstance(result, IdempotentReplay):
        raise result
    return get_job(db, result)


def submit_jobs(db: Database, batch: Sequence[NewJob]) -> list[int | IdempotentReplay]:
    """Insert a batch of submissions in one transaction; one entry per submission, in order:
    the new job's id, or `IdempotentReplay` with the job an earlier request made with
    that key.

    Callers look a key up before they hand the submission in (`keyed_job`), in their own
    thread; a key taken since (a concurrent retry, or one inside this batch) fails the
    whole transaction, and the batch is then inserted one submission at a time, so that
    only the submission that reused the key gets the replay.
    """
    try:
        return list(create_jobs(db, batch))
    except IntegrityError:
        if not any(new.idempotency_key for new in batch):
            raise
    results: list[int | IdempotentReplay] = []
    for new in batch:
        try:
            results.append(create_jobs(db, [new])[0])
        except IntegrityError:
            earlier = (
                keyed_job(db, new.owner_id, new.idempotency_key)
                if new.idempotency_key is not None
                else None
            )
            if earlier is None:
                raise
            results.append(IdempotentReplay(earlier))
    return results


def keyed_job(db: Database, owner_id: int | None, key: str) -> Job | None:
    """The job `owner_id` submitted with Idempotency-Key `key`, if any."""
    with db.session() as session:
        return session.scalars(
            select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key)
        ).first()


def create_jobs(db: Database, batch: Sequence[NewJob]) -> list[int]:
    """Insert queued jobs with their dataset links and first events, all or none, and
    commit. Returns the new ids in the order given. A taken idempotency key raises
    IntegrityError and inserts nothing."""
    if not batch:
        return []
    now = utcnow()
    rows = [_job_values(new, now) for new in batch]
    if not db.is_sqlite:
        return _insert_jobs_one_statement(db, batch, rows)
    with db.session() as session:
        created = [Job(**values) for values in rows]
        session.add_all(created)
        session.flush()
        for job, new in zip(created, batch, strict=True):
            session.add_all(
                JobDataset(job_id=job.id, role=role, dataset_id=dataset_id)
                for role, dataset_id in new.datasets.items()
            )
            _event(session, job.id, 0, None, "queued", new.actor, "submitted")
        return [job.id for job in created]


def _job_values(new: NewJob, now: datetime) -> dict[str, Any]:
    """Every inserted column of a new job, Python-side defaults included."""
    spec = new.spec
    values: dict[str, Any] = {
        "owner_id": new.owner_id,
        "name": spec.name,
        "task": spec.task,
        "model_type": spec.model.type,
        "queue": spec.resources.queue,
        "spec": spec.model_dump(mode="json"),
        "status": "queued",
        "attempt": 0,
        "max_attempts": spec.resources.max_attempts,
        "devices": spec.resources.devices,
        "estimate": new.estimate,
        "idempotency_key": new.idempotency_key,
        # The API enqueues right after the commit; the reconciler counts from here.
        "enqueued_at": now,
        "created_at": now,
        "updated_at": now,
    }
    for column in _JOBS.c:
        default: Any = column.default
        if column.key not in values and default is not None and column.key != "id":
            values[column.key] = default.arg if default.is_scalar else default.arg(None)
    return values


_JOBS = cast(Table, Job.__table__)


def _insert_jobs_one_statement(
    db: Database, batch: Sequence[NewJob], rows: list[dict[str, Any]]
) -> list[int]:
    """PostgreSQL: a whole batch in one statement, committed on its own: one round trip
    whatever the batch size. The rows travel as one JSON document that the server unpacks
    (`json_to_recordset`), and the SQL text never changes, so it is planned once per
    connection. Ids are drawn from the jobs sequence per input row before the insert, so
    each event and dataset link is tied to its job by the row's ordinal, never by the
    order of RETURNING."""
    document = [
        {**values, "event_actor": new.actor, "n": n}
        for n, (values, new) in enumerate(zip(rows, batch, strict=True))
    ]
    links = [
        {"n": n, "role": role, "dataset_id": dataset_id}
        for n, new in enumerate(batch)
        for role, dataset_id in sorted(new.datasets.items())
    ]
    params = {"jobs": _json(document), "links": _json(links)}
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        result = conn.exec_driver_sql(_insert_jobs_sql(tuple(rows[0])), params)
        return [row[0] for row in result]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@functools.cache
def _insert_jobs_sql(names: tuple[str, ...]) -> str:
    """The batch insert for PostgreSQL (psycopg placeholders), built once per column set."""
    dialect = postgresql.dialect()
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in names)
    typed = ", ".join(
        f"{quote(name)} {_JOBS.c[name].type.compile(dialect=dialect)}" for name in names
    )
    # Only the jobs table's own column names and types are spliced in; values are bound.
    return f"""
WITH submitted AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, s.*
    FROM json_to_recordset(CAST(%(jobs)s AS JSON))
        AS s({typed}, event_actor TEXT, n INTEGER)
    ORDER BY s.n
), new_job AS (
    INSERT INTO jobs (id, {columns}) SELECT id, {columns} FROM submitted
), first_event AS (
    INSERT INTO job_events (job_id, attempt, ts, from_status, to_status, actor, message)
    SELECT id, 0, enqueued_at, NULL, 'queued', event_actor, 'submitted' FROM submitted
), dataset_link AS (
    INSERT INTO job_datasets (job_id, role, dataset_id)
    SELECT submitted.id, link.role, link.dataset_id
    FROM json_to_recordset(CAST(%(links)s AS JSON)) AS link(n INTEGER, role TEXT, dataset_id BIGINT)
    JOIN submitted USING (n)
)
SELECT id FROM submitted ORDER BY n"""  # noqa: S608


def note_event(db: Database, job_id: int, actor: str, message: str) -> None:
    """An event that changes no status (e.g. an enqueue that failed and awaits the reconciler)."""
    with db.session() as session:
        attempt = session.scalar(select(Job.attempt).where(Job.id == job_id)) or 0
        _event(session, job_id, attempt, None, None, actor, message)


def note_attempt(db: Database, job_id: int, attempt: int, message: str) -> None:
    """An event by a running attempt, fenced like its other writes."""
    with fenced(db, job_id, attempt) as session:
        _event(session, job_id, attempt, None, None, f"attempt {attempt}", message)


def get_job(db: Database, job_id: int) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job


# What a job list shows: the large `spec` and `estimate` JSON columns stay unloaded.
SUMMARY_COLUMNS = (
    Job.id,
    Job.owner_id,
    Job.name,
    Job.task,
    Job.model_type,
    Job.queue,
    Job.status,
    Job.attempt,
    Job.max_attempts,
    Job.cancel_requested,
    Job.epoch,
    Job.step,
    Job.error,
    Job.devices,
    Job.created_at,
    Job.updated_at,
    Job.started_at,
    Job.finished_at,
)


def list_jobs(
    db: Database,
    status: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
    owner_id: int | None = None,
) -> tuple[list[Any], int | None]:
    """Newest first, keyset-paginated: pass the returned cursor as `before_id` for the next page.

    `owner_id` restricts the list to one user's jobs (None: everyone's). Plain rows, not ORM
    objects: the `SUMMARY_COLUMNS` (not `spec`, `estimate` or the lease) plus `owner`, the
    owner's name, in one query."""
    query = (
        select(*SUMMARY_COLUMNS, User.name.label("owner"))
        .outerjoin(User, User.id == Job.owner_id)
        .order_by(Job.id.desc())
    )
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    if status is not None:
        query = query.where(Job.status == status)
    if before_id is not None:
        query = query.where(Job.id < before_id)
    with db.session() as session:
        rows: list[Any] = list(session.execute(query.limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def job_detail(
    db: Database, job_id: int
) -> tuple[Job, str | None, dict[str, dict[str, Any]], list[JobEvent]]:
    """A job, its owner's name, its latest metrics and its events, in one transaction."""
    with db.session() as session:
        row = session.execute(
            select(Job, User.name).outerjoin(User, User.id == Job.owner_id).where(Job.id == job_id)
        ).first()
        if row is None:
            raise JobNotFound(job_id)
        return row[0], row[1], _latest_metrics(session, job_id), _job_events(session, job_id)


def dataset_links(db: Database, job_id: int) -> dict[str, Dataset]:
    """The dataset versions pinned at submit, by role (train, validation, test)."""
    with db.session() as session:
        rows = session.execute(
            select(JobDataset.role, Dataset)
            .join(Dataset, Dataset.id == JobDataset.dataset_id)
            .where(JobDataset.job_id == job_id)
        )
        return {role: dataset for role, dataset in rows}


def owner_names(db: Database, owner_ids: set[int | None]) -> dict[int | None, str]:
    """user id -> name for the given ids (one query for a whole page)."""
    ids = {i for i in owner_ids if i is not None}
    if not ids:
        return {}
    with db.session() as session:
        rows = session.execute(select(User.id, User.name).where(User.id.in_(ids)))
        return {user_id: name for user_id, name in rows}


def job_events(db: Database, job_id: int) -> list[JobEvent]:
    with db.session() as session:
        return _job_events(session, job_id)


def _job_events(session: Session, job_id: int) -> list[JobEvent]:
    return list(
        session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    )


def latest_metrics(db: Database, job_id: int) -> dict[str, dict[str, Any]]:
    """{"<split>/<name>": {value, step, epoch}} for the newest value of each metric."""
    with db.session() as session:
        return _latest_metrics(session, job_id)


def _latest_metrics(session: Session, job_id: int) -> dict[str, dict[str, Any]]:
    newest = (
        select(func.max(Metric.id))
        .where(Metric.job_id == job_id)
        .group_by(Metric.split, Metric.name)
        .scalar_subquery()
    )
    rows = session.scalars(select(Metric).where(Metric.id.in_(newest)))
    return {
        f"{m.split}/{m.name}": {"value": m.value, "step": m.step, "epoch": m.epoch} for m in rows
    }


def list_metrics(
    db: Database,
    job_id: int,
    name: str | None = None,
    split: str | None = None,
    after_id: int | None = None,
    limit: int = 1000,
) -> list[Metric]:
    query = select(Metric).where(Metric.job_id == job_id).order_by(Metric.id).limit(limit)
    if name is not None:
        query = query.where(Metric.name == name)
    if split is not None:
        query = query.where(Metric.split == split)
    if after_id is not None:
        query = query.where(Metric.id > after_id)
    with db.session() as session:
        return list(session.scalars(query))


def list_checkpoints(db: Database, job_id: int) -> list[Checkpoint]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.id)
            )
        )


def get_checkpoint(db: Database, job_id: int, checkpoint_id: int) -> Checkpoint | None:
    with db.session() as session:
        ckpt = session.get(Checkpoint, checkpoint_id)
        return ckpt if ckpt is not None and ckpt.job_id == job_id else None


def best_checkpoint(db: Database, job_id: int) -> Checkpoint | None:
    """The best checkpoint by the task's validation metric, else the latest."""
    with db.session() as session:
        return session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.is_best.desc(), Checkpoint.step.desc(), Checkpoint.id.desc())
            .limit(1)
        ).first()


def latest_checkpoint(db: Database, job_id: int) -> Checkpoint | None:
    with db.session() as session:
        return session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
            .limit(1)
        ).first()


# ---------------------------------------------------------------- cancel


def request_cancel(db: Database, job_id: int, actor: str) -> Job:
    """Cancel a queued job at once; flag a running one for its supervisor (seen within a second)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status in TERMINAL_STATUSES:
            raise InvalidTransition(f"job {job_id} is already {job.status}")
        done = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="cancelled",
                    finished_at=utcnow(),
                    cancel_requested=True,
                    error="cancelled by user",
                )
            )
        )
        if done:
            _event(session, job_id, job.attempt, "queued", "cancelled", actor, "cancelled by user")
        else:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(cancel_requested=True)
            )
            _event(session, job_id, job.attempt, None, None, actor, "cancel requested")
    return get_job(db, job_id)


# ---------------------------------------------------------------- worker side


def claim(db: Database, job_id: int, worker: str, lease_seconds: float) -> int | None:
    """queued -> running with attempt + 1 in one UPDATE. Returns the new attempt, or None."""
    now = utcnow()
    with db.session() as session:
        attempt = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(
                status="running",
                attempt=Job.attempt + 1,
                lease_owner=worker,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=func.coalesce(Job.started_at, now),
                error=None,
            )
            .returning(Job.attempt)
        ).scalar_one_or_none()
        if attempt is not None:
            _event(
                session,
                job_id,
                attempt,
                "queued",
                "running",
                worker,
                f"claimed (attempt {attempt})",
            )
        return attempt


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
                .where(Job.id == job_id, Job.attempt == attempt, Job.status == "running")
                .values(updated_at=utcnow(), **progress)
            )
        )
        if not owned:
            raise Fenced(f"job {job_id} attempt {attempt} no longer owns the job")
        yield session


def renew_lease(db: Database, job_id: int, attempt: int, lease_seconds: float) -> bool:
    with db.session() as session:
        return bool(
            affected_rows(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.attempt == attempt, Job.status == "running")
                    .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
                )
            )
        )


def poll_running(db: Database, job_id: int, attempt: int) -> tuple[bool, bool]:
    """(still owned by this attempt, cancel requested) -- the supervisor's cheap poll."""
    with db.session() as session:
        row = session.execute(
            select(Job.status, Job.attempt, Job.cancel_requested).where(Job.id == job_id)
        ).one_or_none()
    if row is None:
        return False, False
    owned = row.status == "running" and row.attempt == attempt
    return owned, bool(row.cancel_requested)


def finish(db: Database, job_id: int, attempt: int, status: str, message: str, actor: str) -> bool:
    """running -> succeeded | failed | cancelled for this attempt only. False if fenced out."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"not a terminal status: {status}")
    with db.session() as session:
        done = affected_rows(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.attempt == attempt, Job.status == "running")
                .values(
                    status=status,
                    finished_at=utcnow(),
                    lease_owner=None,
                    lease_expires_at=None,
                    error=None if status == "succeeded" else message,
                )
            )
        )
        if done:
            _event(session, job_id, attempt, "running", status, actor, message)
        return bool(done)


def requeue(db: Database, job_id: int, attempt: int, message: str, actor: str) -> bool:
    """running -> queued for this attempt only (drain); the next claim resumes from a checkpoint.

    A job whose cancel was requested is cancelled instead of requeued.
    """
    with db.session() as session:
        done = affected_rows(
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.attempt == attempt,
                    Job.status == "running",
                    Job.cancel_requested.is_(False),
                )
                .values(
                    status="queued", lease_owner=None, lease_expires_at=None, enqueued_at=utcnow()
                )
            )
        )
        if done:
            _event(session, job_id, attempt, "running", "queued", actor, message)
            return True
    finish(db, job_id, attempt, "cancelled", "cancelled by user", actor)
    return False


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
            .where(Job.status == "running", Job.lease_expires_at < utcnow())
            .order_by(Job.id)
            .limit(limit)
        ).all()
    return [(row.id, row.attempt) for row in rows]


def recover_expired(db: Database, job_id: int, attempt: int, actor: str) -> str | None:
    """Take back a running attempt whose lease expired: requeue it (the next attempt resumes
    from the last checkpoint), fail it when it has used its `max_attempts`, or cancel it when
    a cancel was requested. Returns the new status, or None when the attempt was not expired
    (it renewed its lease, finished, or was already recovered)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != "running" or job.attempt != attempt:
            return None
        owner = job.lease_owner or "unknown"
        if job.cancel_requested:
            status, message = "cancelled", "cancelled by user (its worker was lost)"
        elif attempt >= job.max_attempts:
            status = "failed"
            message = (
                f"worker {owner} lost (lease expired) on attempt {attempt} of "
                f"{job.max_attempts}; giving up"
            )
        else:
            status = "queued"
            message = (
                f"worker {owner} lost (lease expired) on attempt {attempt} of "
                f"{job.max_attempts}; requeued to resume from the last checkpoint"
            )
        values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None}
        if status == "queued":
            values["enqueued_at"] = utcnow()
        else:
            values.update(finished_at=utcnow(), error=message)
        done = affected_rows(
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.attempt == attempt,
                    Job.status == "running",
                    Job.lease_expires_at < utcnow(),
                )
                .values(**values)
            )
        )
        if not done:
            return None
        _event(session, job_id, attempt, "running", status, actor, message)
        return status


def queued_awaiting_message(
    db: Database, older_than_seconds: float, limit: int = 1000
) -> list[tuple[int, str]]:
    """(job id, queue) of queued jobs enqueued more than `older_than_seconds` ago, the
    longest-waiting first: the order in which their messages queue up on Redis."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    with db.session() as session:
        rows = session.execute(
            select(Job.id, Job.queue)
            .where(
                Job.status == "queued",
                (Job.enqueued_at.is_(None)) | (Job.enqueued_at < cutoff),
            )
            .order_by(Job.enqueued_at, Job.id)
            .limit(limit)
        ).all()
    return [(row.id, row.queue) for row in rows]


def mark_enqueued(db: Database, job_ids: Sequence[int]) -> None:
    """Note that these queued jobs were just put on Redis again (one UPDATE)."""
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status == "queued")
            .values(enqueued_at=utcnow())
        )


def requeue_or_fail(db: Database, job_id: int, attempt: int, reason: str, actor: str) -> str:
    """After an attempt crashed: requeue it to resume (attempts left) or fail it with the
    reason. Returns the status it ended in (queued | failed | cancelled | fenced)."""
    job = get_job(db, job_id)
    if job.status != "running" or job.attempt != attempt:
        return "fenced"
    if attempt >= job.max_attempts:
        message = f"{reason}\n(attempt {attempt} of {job.max_attempts}; giving up)"
        return "failed" if finish(db, job_id, attempt, "failed", message, actor) else "fenced"
    message = f"{reason}\n(attempt {attempt} of {job.max_attempts}; requeued to resume)"
    if requeue(db, job_id, attempt, message, actor):
        return "queued"
    return "cancelled"


# ---------------------------------------------------------------- read-only views (status pages)

JOB_SORTS = {
    "newest": (Job.id.desc(),),
    "oldest": (Job.id.asc(),),
    "name": (Job.name.asc(), Job.id.desc()),
    "status": (Job.status.asc(), Job.id.desc()),
    "updated": (Job.updated_at.desc(), Job.id.desc()),
}


def search_jobs(
    db: Database,
    *,
    owner_id: int | None = None,
    status: str | None = None,
    name_contains: str | None = None,
    sort: str = "newest",
    offset: int = 0,
    limit: int = 20,
) -> tuple[list[Job], int]:
    """One page of jobs and the total that match: by owner (None: everyone's), status and a
    case-insensitive substring of the name, ordered by one of JOB_SORTS."""
    where = []
    if owner_id is not None:
        where.append(Job.owner_id == owner_id)
    if status is not None:
        where.append(Job.status == status)
    if name_contains:
        where.append(func.lower(Job.name).contains(name_contains.lower(), autoescape=True))
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
        page = session.scalars(
            select(Job).where(*where).order_by(*JOB_SORTS[sort]).offset(offset).limit(limit)
        )
        return list(page), total


def latest_metrics_for(
    db: Database, job_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, Any]]]:
    """`latest_metrics` for several jobs in one query: job id -> {"<split>/<name>": {...}}."""
    if not job_ids:
        return {}
    newest = (
        select(func.max(Metric.id))
        .where(Metric.job_id.in_(job_ids))
        .group_by(Metric.job_id, Metric.split, Metric.name)
        .scalar_subquery()
    )
    found: dict[int, dict[str, dict[str, Any]]] = {job_id: {} for job_id in job_ids}
    with db.session() as session:
        for m in session.scalars(select(Metric).where(Metric.id.in_(newest))):
            found[m.job_id][f"{m.split}/{m.name}"] = {
                "value": m.value,
                "step": m.step,
                "epoch": m.epoch,
            }
    return found


def events_after(db: Database, job_id: int, after_id: int | None = None) -> list[JobEvent]:
    """A job's events in order, only those newer than `after_id` when given."""
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    if after_id is not None:
        query = query.where(JobEvent.id > after_id)
    with db.session() as session:
        return list(session.scalars(query))


def job_owners(db: Database, job_ids: set[int]) -> dict[int, int | None]:
    """job id -> owner id for the given ids (missing jobs are left out)."""
    if not job_ids:
        return {}
    with db.session() as session:
        rows = session.execute(select(Job.id, Job.owner_id).where(Job.id.in_(job_ids)))
        return {job_id: owner_id for job_id, owner_id in rows}
