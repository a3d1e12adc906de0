"""Read-only figures about the whole service, for /metrics: jobs by status, queued and
running jobs by user, preemptions, run times, live workers, the training speed of running
jobs. Each is one SQL query (two for the users' names)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, select

from shared.infra.db import Database
from shared.infra.models import (
    JOB_STATUSES,
    TERMINAL_STATUSES,
    Job,
    Metric,
    User,
    Worker,
    utcnow,
)
from shared.protocol import JobStatus

# Upper bounds (seconds) of the job-duration histogram: 10 s to a day.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 86400.0)


@dataclass
class Histogram:
    """Cumulative bucket counts (as Prometheus wants them), the sum and the count."""

    buckets: list[tuple[float, int]]
    total: float
    count: int


def jobs_by_status(db: Database) -> dict[str, int]:
    """Every status, with 0 for those no job has."""
    with db.session() as session:
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
        counts = {str(status): int(n) for status, n in rows}
    return {status: counts.get(status, 0) for status in JOB_STATUSES} | counts


def jobs_by_user(db: Database) -> dict[str, dict[str, int]]:
    """Queued and running jobs per owner's name ("" for jobs nobody owns): status -> name ->
    count, every user with 0 for none. Counted by owner id (an index-only scan of
    ix_jobs_owner_status_id), the names read apart."""
    wanted = (JobStatus.QUEUED, JobStatus.RUNNING)
    with db.session() as session:
        names = {uid: name for uid, name in session.execute(select(User.id, User.name))}
        rows = session.execute(
            select(Job.owner_id, Job.status, func.count())
            .where(Job.status.in_(wanted))
            .group_by(Job.owner_id, Job.status)
        ).all()
    found = {str(status): dict.fromkeys(names.values(), 0) for status in wanted}
    for owner_id, status, n in rows:
        name = names.get(owner_id, "") if owner_id is not None else ""
        counts = found[str(status)]
        counts[name] = counts.get(name, 0) + int(n)
    return found


def preemptions_total(db: Database) -> int:
    """Times any job was checkpointed and requeued to make room for another."""
    with db.session() as session:
        return int(session.scalar(select(func.coalesce(func.sum(Job.preemptions), 0))) or 0)


def queues_in_use(db: Database) -> set[str]:
    """Queues that queued jobs, or live workers, name."""
    with db.session() as session:
        queues = set(session.scalars(select(Job.queue).where(Job.status == "queued").distinct()))
        for names in session.scalars(select(Worker.queues).where(Worker.state != "stopped")):
            queues.update(names or [])
    return queues


def _seconds_between(db: Database, start: Any, end: Any) -> ColumnElement[float]:
    if db.is_sqlite:
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return cast(func.extract("epoch", end - start), Float)


def job_durations(
    db: Database, buckets: Sequence[float] = DURATION_BUCKETS
) -> dict[str, Histogram]:
    """Seconds from a job's first start to its end, per terminal status, computed in SQL."""
    seconds = _seconds_between(db, Job.started_at, Job.finished_at)
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in buckets]
    query = (
        select(Job.status, func.count(), func.sum(seconds), *columns)
        .where(Job.status.in_(TERMINAL_STATUSES), Job.started_at.is_not(None))
        .where(Job.finished_at.is_not(None))
        .group_by(Job.status)
    )
    found = {
        str(status): Histogram([(bound, 0) for bound in buckets], 0.0, 0)
        for status in TERMINAL_STATUSES
    }
    with db.session() as session:
        for status, count, total, *counts in session.execute(query):
            found[str(status)] = Histogram(
                [(bound, int(n or 0)) for bound, n in zip(buckets, counts, strict=True)],
                float(total or 0.0),
                int(count),
            )
    return found


def workers_by_state(db: Database, stale_after: float) -> dict[str, int]:
    """live (heartbeat younger than `stale_after` s) and busy (live, training a job)."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    live = (Worker.state != "stopped") & (Worker.heartbeat_at >= cutoff)
    with db.session() as session:
        row = session.execute(
            select(
                func.count().filter(live),
                func.count().filter(live & Worker.current_job_id.is_not(None)),
            )
        ).one()
    return {"live": int(row[0] or 0), "busy": int(row[1] or 0)}


def running_tokens_per_second(db: Database) -> dict[int, float]:
    """The newest `train/tokens_per_s` of each running job (its current attempt only)."""
    newest = (
        select(func.max(Metric.id))
        .join(Job, Job.id == Metric.job_id)
        .where(
            Job.status == "running",
            Metric.attempt == Job.attempt,
            Metric.split == "train",
            Metric.name == "tokens_per_s",
        )
        .group_by(Metric.job_id)
        .scalar_subquery()
    )
    with db.session() as session:
        rows = session.execute(select(Metric.job_id, Metric.value).where(Metric.id.in_(newest)))
        return {int(job_id): float(value) for job_id, value in rows}
