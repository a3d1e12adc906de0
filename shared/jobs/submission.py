"""Submitting jobs: one insert for a whole batch, idempotency keys, the owner's max_queued
(checked in the insert's own transaction), and the queued jobs the reconciler puts on
Redis again."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.infra.db import Database
from shared.infra.models import Dataset, Job, JobDataset, PretrainedModel, User, utcnow
from shared.jobs.errors import DatasetGone, IdempotentReplay, QuotaExceeded
from shared.jobs.events import add_event
from shared.jobs.queries import get_job
from shared.jobs.ranking import DEFAULT_AGING, rank_key
from shared.protocol import JobStatus
from shared.spec import JobSpec


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
    # The first event's message: how the job came to be.
    message: str = "submitted"
    # The registry's base model a pretrained job fine-tunes (pinned at submit).
    base_model_id: int | None = None
    # SEQTRAIN_PRIORITY_AGING: the seconds of waiting that count as one priority level.
    aging: float = DEFAULT_AGING
    # The owner's max_queued as the API read it: when set, the insert locks the owner's row
    # and counts their queued jobs against the limit then current; None keeps the fast path.
    max_queued: int | None = None


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
    if isinstance(result, Exception):
        raise result
    return get_job(db, result)


Result = int | IdempotentReplay | DatasetGone | QuotaExceeded


def submit_jobs(db: Database, batch: Sequence[NewJob]) -> list[Result]:
    """Insert a batch of submissions in one transaction; one entry per submission, in order:
    the new job's id, `IdempotentReplay` with the job an earlier request made with that
    key, `DatasetGone` naming the datasets it pins that were deleted meanwhile, or
    `QuotaExceeded` when its owner already has `max_queued` jobs waiting.

    Callers look a key up and resolve datasets before they hand the submission in, in
    their own thread; a key taken since (a concurrent retry, or one inside this batch) or
    a dataset deleted since fails the whole transaction, and the batch is then inserted
    one submission at a time, so that only the submission concerned gets its refusal.
    """
    try:
        return _replays_over_quota(db, batch, create_jobs(db, batch))
    except IntegrityError:
        pass
    results: list[Result] = []
    for new in batch:
        try:
            results.append(create_jobs(db, [new])[0])
        except IntegrityError:
            refusal = _refusal(db, new)
            if refusal is None:
                raise
            results.append(refusal)
    return _replays_over_quota(db, batch, results)


def _replays_over_quota(
    db: Database, batch: Sequence[NewJob], results: Sequence[Result]
) -> list[Result]:
    """A retry whose key already made a job answers with that job, even at the quota."""
    answers = list(results)
    for n, (new, result) in enumerate(zip(batch, results, strict=True)):
        if isinstance(result, QuotaExceeded) and new.idempotency_key is not None:
            earlier = keyed_job(db, new.owner_id, new.idempotency_key)
            if earlier is not None:
                answers[n] = IdempotentReplay(earlier)
    return answers


def _refusal(db: Database, new: NewJob) -> IdempotentReplay | DatasetGone | None:
    """Why a submission's insert broke a constraint, if it is the caller's to know."""
    if new.idempotency_key is not None:
        earlier = keyed_job(db, new.owner_id, new.idempotency_key)
        if earlier is not None:
            return IdempotentReplay(earlier)
    if new.datasets:
        with db.session() as session:
            present = set(
                session.scalars(select(Dataset.id).where(Dataset.id.in_(new.datasets.values())))
            )
        gone = {role: ds for role, ds in new.datasets.items() if ds not in present}
        if gone:
            return DatasetGone(gone)
    if new.base_model_id is not None:
        with db.session() as session:
            if session.get(PretrainedModel, new.base_model_id) is None:
                return DatasetGone({"model": new.base_model_id})
    return None


def keyed_job(db: Database, owner_id: int | None, key: str) -> Job | None:
    """The job `owner_id` submitted with Idempotency-Key `key`, if any."""
    with db.session() as session:
        return session.scalars(
            select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key)
        ).first()


def create_jobs(db: Database, batch: Sequence[NewJob]) -> list[int | QuotaExceeded]:
    """Insert queued jobs with their dataset links and first events, all or none, and
    commit. Returns the new ids in the order given, or `QuotaExceeded` for a submission
    past its owner's max_queued (not inserted). A taken idempotency key raises
    IntegrityError and inserts nothing."""
    if not batch:
        return []
    now = utcnow()
    rows = [job_values(new, now) for new in batch]
    limited = any(new.max_queued is not None for new in batch)
    if not db.is_sqlite and not limited:  # the fast path: one statement, in autocommit
        with db.engine.connect() as conn:
            autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
            return list(_insert_jobs_one_statement(autocommit, batch, rows))
    with db.session() as session:
        verdicts = _over_quota(session, batch) if limited else [None] * len(batch)
        admitted = [n for n, verdict in enumerate(verdicts) if verdict is None]
        ids = iter(_insert_jobs(session, [batch[n] for n in admitted], [rows[n] for n in admitted]))
        return [next(ids) if verdict is None else verdict for verdict in verdicts]


def _over_quota(session: Session, batch: Sequence[NewJob]) -> list[QuotaExceeded | None]:
    """For each submission, `QuotaExceeded` if it would pass its owner's max_queued, in
    batch order. The owners' rows stay locked until the transaction ends, so a concurrent
    batch (in any API process) counts after this one's jobs are committed: FOR NO KEY
    UPDATE on PostgreSQL, which other inserts' foreign-key checks do not wait for; on
    SQLite every write transaction is already serial (BEGIN IMMEDIATE)."""
    owners = sorted(
        {new.owner_id for new in batch if new.max_queued is not None and new.owner_id is not None}
    )
    locked = session.execute(
        select(User.id, User.max_queued)
        .where(User.id.in_(owners))
        .order_by(User.id)  # one order everywhere: two batches never deadlock
        .with_for_update(key_share=True)
    ).all()
    limits: dict[int | None, int | None] = {row.id: row.max_queued for row in locked}
    counted = session.execute(
        select(Job.owner_id, func.count())
        .where(Job.owner_id.in_(owners), Job.status == JobStatus.QUEUED)
        .group_by(Job.owner_id)
    ).all()
    queued: dict[int | None, int] = {row[0]: row[1] for row in counted}
    verdicts: list[QuotaExceeded | None] = []
    for new in batch:
        limit = limits.get(new.owner_id)
        waiting = queued.get(new.owner_id, 0)
        if limit is not None and waiting >= limit:
            verdicts.append(QuotaExceeded(waiting, limit))
            continue
        queued[new.owner_id] = waiting + 1
        verdicts.append(None)
    return verdicts


def _insert_jobs(
    session: Session, batch: Sequence[NewJob], rows: list[dict[str, Any]]
) -> list[int]:
    """Insert the jobs in the session's transaction (committed with it)."""
    if not batch:
        return []
    if session.get_bind().dialect.name != "sqlite":
        return _insert_jobs_one_statement(session.connection(), batch, rows)
    created = [Job(**values) for values in rows]
    session.add_all(created)
    session.flush()
    for job, new in zip(created, batch, strict=True):
        session.add_all(
            JobDataset(job_id=job.id, role=role, dataset_id=dataset_id)
            for role, dataset_id in new.datasets.items()
        )
        add_event(session, job.id, 0, None, JobStatus.QUEUED, new.actor, new.message)
    return [job.id for job in created]


def job_values(new: NewJob, now: datetime) -> dict[str, Any]:
    """Every inserted column of a new job, Python-side defaults included."""
    spec = new.spec
    values: dict[str, Any] = {
        "owner_id": new.owner_id,
        "name": spec.name,
        "task": spec.task,
        "model_type": spec.model.type,
        "queue": spec.resources.queue,
        "spec": spec.model_dump(mode="json"),
        "status": JobStatus.QUEUED,
        "attempt": 0,
        "max_attempts": spec.resources.max_attempts,
        "devices": spec.resources.devices,
        "nodes": spec.resources.nodes,
        "priority": spec.resources.priority,
        "preemptible": spec.resources.preemptible,
        "rank_key": rank_key(spec.resources.priority, now, new.aging),
        "estimate": new.estimate,
        "idempotency_key": new.idempotency_key,
        "base_model_id": new.base_model_id,
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
    conn: Connection, batch: Sequence[NewJob], rows: list[dict[str, Any]]
) -> list[int]:
    """PostgreSQL: a whole batch in one statement (in autocommit on the fast path): one
    round trip whatever the batch size. The rows travel as one JSON document that the server unpacks
    (`json_to_recordset`), and the SQL text never changes, so it is planned once per
    connection. Ids are drawn from the jobs sequence per input row before the insert, so
    each event and dataset link is tied to its job by the row's ordinal, never by the
    order of RETURNING."""
    document = [
        {**values, "event_actor": new.actor, "event_message": new.message, "n": n}
        for n, (values, new) in enumerate(zip(rows, batch, strict=True))
    ]
    links = [
        {"n": n, "role": role, "dataset_id": dataset_id}
        for n, new in enumerate(batch)
        for role, dataset_id in sorted(new.datasets.items())
    ]
    params = {"jobs": _json(document), "links": _json(links)}
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
    # Only the jobs table's own column names and types, and the constant first status, are
    # spliced in; values are bound.
    return f"""
WITH submitted AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, s.*
    FROM json_to_recordset(CAST(%(jobs)s AS JSON))
        AS s({typed}, event_actor TEXT, event_message TEXT, n INTEGER)
    ORDER BY s.n
), new_job AS (
    INSERT INTO jobs (id, {columns}) SELECT id, {columns} FROM submitted
), first_event AS (
    INSERT INTO job_events (job_id, attempt, ts, from_status, to_status, actor, message)
    SELECT id, 0, enqueued_at, NULL, '{JobStatus.QUEUED}', event_actor, event_message
    FROM submitted
), dataset_link AS (
    INSERT INTO job_datasets (job_id, role, dataset_id)
    SELECT submitted.id, link.role, link.dataset_id
    FROM json_to_recordset(CAST(%(links)s AS JSON)) AS link(n INTEGER, role TEXT, dataset_id BIGINT)
    JOIN submitted USING (n)
)
SELECT id FROM submitted ORDER BY n"""  # noqa: S608


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
                Job.status == JobStatus.QUEUED,
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
            .where(Job.id.in_(job_ids), Job.status == JobStatus.QUEUED)
            .values(enqueued_at=utcnow())
        )
