"""Reading jobs: one job, pages of jobs, a job's detail, owners, events, metrics and
checkpoints. Nothing here writes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from shared.infra.db import Database
from shared.infra.models import Checkpoint, Dataset, Job, JobDataset, JobEvent, Metric, User
from shared.jobs.errors import JobNotFound
from shared.protocol import JobStatus


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
    Job.total_steps,
    Job.error,
    Job.devices,
    Job.priority,
    Job.created_at,
    Job.updated_at,
    Job.started_at,
    Job.finished_at,
)

JOB_SORTS = {
    "newest": (Job.id.desc(),),
    "oldest": (Job.id.asc(),),
    "name": (Job.name.asc(), Job.id.desc()),
    "status": (Job.status.asc(), Job.id.desc()),
    "updated": (Job.updated_at.desc(), Job.id.desc()),
}


class JobPage(NamedTuple):
    """One page of `list_jobs`."""

    rows: list[Any]  # the SUMMARY_COLUMNS and `owner` (the owner's name), plus `spec` if asked
    next_cursor: int | None  # pass as `before_id` for the next page (newest first only)
    total: int | None  # the jobs matching the filters, on every page (with `count` only)


def list_jobs(
    db: Database,
    *,
    owner_id: int | None = None,
    status: JobStatus | None = None,
    name_contains: str | None = None,
    sort: str = "newest",
    limit: int = 50,
    before_id: int | None = None,
    offset: int = 0,
    count: bool = False,
    with_spec: bool = False,
) -> JobPage:
    """One page of jobs: by owner (None: everyone's), status and a case-insensitive substring
    of the name, ordered by one of JOB_SORTS. Newest first it is keyset-paginated (pass the
    returned cursor as `before_id`); every order also pages by `offset`.

    Plain rows, not ORM objects, in one query: the `SUMMARY_COLUMNS` (not `spec`, `estimate`
    or the lease, unless `with_spec`) and `owner`, the owner's name. `count` adds a second
    query for the total."""
    where = []
    if owner_id is not None:
        where.append(Job.owner_id == owner_id)
    if status is not None:
        where.append(Job.status == status)
    if name_contains:
        where.append(func.lower(Job.name).contains(name_contains.lower(), autoescape=True))
    columns = (*SUMMARY_COLUMNS, Job.spec) if with_spec else SUMMARY_COLUMNS
    query = (
        select(*columns, User.name.label("owner"))
        .outerjoin(User, User.id == Job.owner_id)
        .where(*where)
        .order_by(*JOB_SORTS[sort])
    )
    if before_id is not None:
        query = query.where(Job.id < before_id)
    with db.session() as session:
        rows: list[Any] = list(session.execute(query.offset(offset).limit(limit + 1)))
        total = (
            session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
            if count
            else None
        )
    more = len(rows) > limit and sort == "newest"
    return JobPage(rows[:limit], rows[limit - 1].id if more else None, total)


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
        latest = _latest_metrics(session, [job_id])[job_id]
        return row[0], row[1], latest, _job_events(session, job_id)


def dataset_links(db: Database, job_id: int) -> dict[str, Dataset]:
    """The dataset versions pinned at submit, by role (train, validation, test)."""
    with db.session() as session:
        rows = session.execute(
            select(JobDataset.role, Dataset)
            .join(Dataset, Dataset.id == JobDataset.dataset_id)
            .where(JobDataset.job_id == job_id)
        )
        return {role: dataset for role, dataset in rows}


class Owner(NamedTuple):
    """Who owns something: the user's id and name (None for a job nobody owns)."""

    id: int | None = None
    name: str | None = None


def owners(
    db: Database, *, user_ids: Iterable[int | None] = (), job_ids: Iterable[int] = ()
) -> dict[int | None, Owner]:
    """The owners of the given users (each itself) or jobs, keyed by the ids given (pass one
    kind); unknown ids are left out. One query for a whole page."""
    users = {i for i in user_ids if i is not None}
    wanted = set(job_ids)
    if users and wanted:
        raise ValueError("pass user ids or job ids, not both")
    query: Select[int, int | None, str | None]
    if users:
        query = select(User.id.label("key"), User.id, User.name).where(User.id.in_(users))
    elif wanted:
        query = (
            select(Job.id, Job.owner_id, User.name)
            .outerjoin(User, User.id == Job.owner_id)
            .where(Job.id.in_(wanted))
        )
    else:
        return {}
    with db.session() as session:
        return {key: Owner(owner_id, name) for key, owner_id, name in session.execute(query)}


def job_events(db: Database, job_id: int, after_id: int | None = None) -> list[JobEvent]:
    """A job's events in order, only those newer than `after_id` when given."""
    with db.session() as session:
        return _job_events(session, job_id, after_id)


def _job_events(session: Session, job_id: int, after_id: int | None = None) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    if after_id is not None:
        query = query.where(JobEvent.id > after_id)
    return list(session.scalars(query))


def latest_metrics(db: Database, job_ids: Sequence[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """The newest value of each metric of each job, in one query:
    job id -> {"<split>/<name>": {value, step, epoch}} (empty for a job without metrics)."""
    if not job_ids:
        return {}
    with db.session() as session:
        return _latest_metrics(session, job_ids)


def _latest_metrics(
    session: Session, job_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, Any]]]:
    newest = (
        select(func.max(Metric.id))
        .where(Metric.job_id.in_(job_ids))
        .group_by(Metric.job_id, Metric.split, Metric.name)
        .scalar_subquery()
    )
    found: dict[int, dict[str, dict[str, Any]]] = {job_id: {} for job_id in job_ids}
    for m in session.scalars(select(Metric).where(Metric.id.in_(newest))):
        found[m.job_id][f"{m.split}/{m.name}"] = {
            "value": m.value,
            "step": m.step,
            "epoch": m.epoch,
        }
    return found


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
