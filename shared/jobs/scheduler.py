"""Which job a free worker takes: decided in SQL at the moment it is free, never by the
order of Redis messages (a message only wakes a worker; shared.jobs.ranking has the order).

`next_work` is what a worker calls for every message it takes:

1. A multi-node job still reserving workers on the queue comes first: the worker takes its
   lowest free node rank (one reservation round at a time per queue, so two gang jobs never
   hold workers the other needs).
2. Otherwise it claims the best queued job it can hold: each owner's best job on the queue
   (one index probe an owner: `ix_jobs_claim`), ordered by level, share and age, leaving
   out jobs needing more devices than it has (backfill: a job that fits goes before a
   larger one that cannot start here anyway), owners at a soft quota, and multi-node jobs
   while another reserves or while fewer live workers could ever hold them.

The claim is one conditional UPDATE as before (queued -> running, attempt + 1); losing a
race to another worker moves on to the next candidate. An owner with a soft quota has their
row locked while the quota is checked again, so two workers never both start the job that
would pass it; multi-node claims on a queue are serialised the same way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, text, update
from sqlalchemy.orm import Session

from shared.infra.db import Database
from shared.infra.models import Job, JobNode, User, Worker, utcnow
from shared.jobs import nodes as node_rows
from shared.jobs.events import add_event
from shared.jobs.ranking import Candidate, OwnerLoad, Policy, decayed, order, running_usage
from shared.protocol import JobStatus

# Candidates tried before a worker gives up one wake-up (others took them meanwhile).
CLAIM_TRIES = 8


@dataclass(frozen=True)
class Work:
    """What a worker got: a claimed attempt (`node_rank` None) or a rank of a reservation."""

    job_id: int
    attempt: int
    node_rank: int | None = None


def owner_loads(session: Session, policy: Policy, now: float) -> dict[int | None, OwnerLoad]:
    """Every owner's running jobs, devices in use, decayed usage and soft limits."""
    loads: dict[int | None, OwnerLoad] = {}
    users = session.execute(
        select(User.id, User.max_running, User.max_devices, User.usage, User.usage_at)
    ).all()
    for u in users:
        loads[u.id] = OwnerLoad(
            usage=decayed(u.usage, u.usage_at, now),
            max_running=u.max_running,
            max_devices=u.max_devices,
        )
    running = session.execute(
        select(Job.owner_id, Job.devices, Job.nodes, Job.claimed_at).where(
            Job.status == JobStatus.RUNNING
        )
    ).all()
    for r in running:
        load = loads.setdefault(r.owner_id, OwnerLoad())
        load.running += 1
        load.devices += r.devices * r.nodes
        load.usage += running_usage(r.devices, r.nodes, r.claimed_at, now)
    return loads


def heads(session: Session, queue: str, devices: int, max_nodes: int = 1) -> list[Candidate]:
    """Each owner's best queued job on `queue` that needs at most `devices` devices and
    `max_nodes` nodes."""

    def best(owner: ColumnElement[bool]) -> Select[Any]:
        query = select(Job.id).where(
            Job.status == JobStatus.QUEUED,
            Job.queue == queue,
            owner,
            Job.devices <= devices,
        )
        if max_nodes <= 1:
            query = query.where(Job.nodes == 1)
        else:
            query = query.where(Job.nodes <= max_nodes)
        return query.order_by(Job.rank_key, Job.id).limit(1)

    owned = best(Job.owner_id == User.id).correlate(User).scalar_subquery()
    ids = [i for i in session.scalars(select(owned).select_from(User)) if i is not None]
    orphan = session.scalar(best(Job.owner_id.is_(None)))
    if orphan is not None:
        ids.append(orphan)
    if not ids:
        return []
    rows = session.execute(
        select(Job.id, Job.owner_id, Job.rank_key, Job.devices, Job.nodes, Job.priority).where(
            Job.id.in_(ids)
        )
    ).all()
    return [Candidate(r.id, r.owner_id, r.rank_key, r.devices, r.nodes, r.priority) for r in rows]


def reserving(session: Session, queue: str) -> list[tuple[int, int, int, int]]:
    """(job id, attempt, devices, nodes) of the multi-node attempts on `queue` that do not
    hold all their node ranks yet, best rank first."""
    held = (
        select(func.count())
        .select_from(JobNode)
        .where(JobNode.job_id == Job.id, JobNode.attempt == Job.attempt)
        .correlate(Job)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Job.id, Job.attempt, Job.devices, Job.nodes)
        .where(Job.status == JobStatus.RUNNING, Job.queue == queue, Job.nodes > 1, held < Job.nodes)
        .order_by(Job.rank_key, Job.id)
    ).all()
    return [(r.id, r.attempt, r.devices, r.nodes) for r in rows]


def fitting_workers(session: Session, queue: str, devices: int, stale_after: float) -> int:
    """Live workers on `queue` with at least `devices` devices."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    rows = session.execute(
        select(Worker.queues, Worker.device_count).where(
            Worker.state == "up", Worker.heartbeat_at >= cutoff
        )
    ).all()
    return sum(1 for r in rows if queue in (r.queues or []) and r.device_count >= devices)


def next_work(
    db: Database,
    worker: str,
    queue: str,
    devices: int,
    lease_seconds: float,
    policy: Policy,
    stale_after: float = 30.0,
) -> Work | None:
    """What this free worker should do now (see the module's docstring), or None."""
    with db.session() as session:
        pending = reserving(session, queue)
    for job_id, attempt, needed, nodes in pending:
        if needed <= devices:
            rank = node_rows.take_rank(db, job_id, attempt, nodes, worker)
            if rank is not None:
                return Work(job_id, attempt, rank)
    for _ in range(CLAIM_TRIES):
        with db.session() as session:
            ranked = _ranked(session, queue, devices, policy, stale_after, gangs=not pending)
        if not ranked:
            return None
        for candidate in ranked[:CLAIM_TRIES]:
            claimed = claim_candidate(db, candidate, worker, lease_seconds, queue)
            if claimed is not None:
                return Work(candidate.job_id, claimed)
    return None


def _ranked(
    session: Session, queue: str, devices: int, policy: Policy, stale_after: float, gangs: bool
) -> list[Candidate]:
    """The candidates in the order this worker tries them. A multi-node job is a candidate
    only while enough live workers could hold it; when one is not, each owner's best
    single-node job is looked at instead (a job that cannot start never blocks others)."""
    now = utcnow().timestamp()
    loads = owner_loads(session, policy, now)
    max_nodes = fitting_workers(session, queue, 1, stale_after) if gangs else 1
    found = heads(session, queue, devices, max_nodes)
    startable = [
        c
        for c in found
        if c.nodes == 1 or fitting_workers(session, queue, c.devices, stale_after) >= c.nodes
    ]
    if len(startable) < len(found):
        startable = heads(session, queue, devices)
    return order(startable, loads, policy, now)


def claim_candidate(
    db: Database, candidate: Candidate, worker: str, lease_seconds: float, queue: str
) -> int | None:
    """Claim `candidate` if it is still queued, its owner's soft quota still allows it and,
    for a multi-node job, no other reservation started on the queue meanwhile."""
    with db.session() as session:
        if candidate.nodes > 1:
            _lock(session, f"gang:{queue}")
            if reserving(session, queue):
                return None
        if candidate.owner_id is not None and _has_quota(session, candidate.owner_id):
            load = _owner_load(session, candidate.owner_id)
            if load.held_back(candidate.footprint) is not None:
                return None
        return claim_in(session, candidate.job_id, worker, lease_seconds)


def claim_in(session: Session, job_id: int, worker: str, lease_seconds: float) -> int | None:
    """queued -> running with attempt + 1 in one UPDATE, in the caller's transaction."""
    now = utcnow()
    attempt = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            lease_owner=worker,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, now),
            claimed_at=now,
            preempt_by=None,
            error=None,
        )
        .returning(Job.attempt)
    ).scalar_one_or_none()
    if attempt is not None:
        add_event(
            session,
            job_id,
            attempt,
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            worker,
            f"claimed (attempt {attempt})",
        )
    return attempt


def held_by_quota(db: Database, owner_id: int | None, queue: str) -> int | None:
    """The best queued job on `queue` of an owner with a soft quota, or None."""
    if owner_id is None:
        return None
    with db.session() as session:
        user = session.get(User, owner_id)
        if user is None or (user.max_running is None and user.max_devices is None):
            return None
        return session.scalar(
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED, Job.queue == queue, Job.owner_id == owner_id)
            .order_by(Job.rank_key, Job.id)
            .limit(1)
        )


def owner_queued(db: Database, owner_id: int, limit: int) -> list[tuple[int, str]]:
    """(job id, queue) of an owner's best `limit` queued jobs: those to wake when their
    soft quota changes (a job it held spent its message on a worker that could not start it)."""
    with db.session() as session:
        rows = session.execute(
            select(Job.id, Job.queue)
            .where(Job.status == JobStatus.QUEUED, Job.owner_id == owner_id)
            .order_by(Job.rank_key, Job.id)
            .limit(limit)
        ).all()
    return [(row.id, row.queue) for row in rows]


def _has_quota(session: Session, owner_id: int) -> bool:
    """Lock the owner's row (PostgreSQL; SQLite's write lock is already held) and say
    whether they have a soft quota."""
    row = session.execute(
        select(User.max_running, User.max_devices).where(User.id == owner_id).with_for_update()
    ).one_or_none()
    return row is not None and (row.max_running is not None or row.max_devices is not None)


def _owner_load(session: Session, owner_id: int) -> OwnerLoad:
    user = session.get(User, owner_id)
    running = session.execute(
        select(Job.devices, Job.nodes).where(
            Job.owner_id == owner_id, Job.status == JobStatus.RUNNING
        )
    ).all()
    return OwnerLoad(
        running=len(running),
        devices=sum(d * n for d, n in running),
        max_running=user.max_running if user else None,
        max_devices=user.max_devices if user else None,
    )


def _lock(session: Session, name: str) -> None:
    """A transaction-scoped lock on `name` (PostgreSQL; SQLite transactions are serial)."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(name.encode()) - (1 << 31)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
