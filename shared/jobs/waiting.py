"""Where the queue stands, for people: a queued job's position and why it waits, and what
each worker holds. Nothing here writes.

Position is 1 + the queued jobs on the job's queue with a smaller (rank_key, id): the order
of priority with aging (shared.jobs.ranking), the order a free worker takes jobs in across
levels. Within one level fair share puts the owner with the smaller recent usage first, a
job that fits a free worker goes before a larger one that cannot start there (backfill) and
an owner at a soft quota is passed over, so the position is where the job stands, not a
promise of who starts next. It is counted in `ix_jobs_claim` (status, queue, owner_id,
rank_key, id) alone, by index ranges of each owner that end at the job's (rank_key, id), so
the cost grows with the jobs ahead, not the queue: with 100,000 queued jobs of 50 owners
the whole answer took 5 ms at the front of the queue and 22 ms at its back on PostgreSQL 15
(5 and 10 ms on SQLite).

Why it waits, the first that applies:

1. its owner's soft quota (max_running, max_devices): "your quota: 2 running (at most 2)";
2. a multi-node job lacking free workers: "waiting for 2 free workers" (the nodes it needs
   less the live, idle workers on its queue with its devices);
3. jobs of a higher level ahead: "3 jobs of higher priority ahead" (those whose own wait
   puts them above the level of the job's priority now, shared.jobs.ranking.levels: never
   a job of its own priority, which shares its level; a job of another priority that rises
   only with its priority's oldest job is not counted);
4. no live worker on its queue has its devices: "no live worker on queue 'gpu' has 4 devices";
5. else "2 jobs ahead", or "next: waiting for a free worker".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, func, literal, select, tuple_
from sqlalchemy.orm import Session

from shared.infra.db import Database
from shared.infra.models import Job, JobNode, User, Worker, utcnow
from shared.jobs.errors import JobNotFound
from shared.jobs.ranking import Candidate, OwnerLoad, Policy, levels
from shared.jobs.scheduler import fitting_workers, owner_loads
from shared.protocol import JobStatus
from shared.settings import Settings

# ranking.level adds this to (now - key) / aging before the floor; the edge below keeps it.
_LEVEL_SLACK = 1e-9


@dataclass(frozen=True)
class Wait:
    """A queued job's place in its queue (1 = the first) and why it has not started."""

    position: int
    reason: str


@dataclass(frozen=True)
class Facts:
    """What the reason is told from: the job's queue and size, the jobs ahead of it (and of
    those, the ones of a higher level), its owner's quota, and the live workers on its queue
    (all, those with its devices, and of those the ones idle now)."""

    queue: str
    devices: int
    nodes: int
    ahead: int
    higher: int
    quota: str | None
    live: int
    fitting: int
    idle_fitting: int


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def reason(facts: Facts) -> str:
    """Why the job waits: the first of the module's reasons that applies."""
    if facts.quota is not None:
        return facts.quota
    missing = facts.nodes - facts.idle_fitting
    if facts.nodes > 1 and missing > 0:
        return f"waiting for {_count(missing, 'free worker', 'free workers')}"
    if facts.higher > 0:
        return f"{_count(facts.higher, 'job', 'jobs')} of higher priority ahead"
    if facts.fitting == 0:
        if facts.live == 0:
            return f"no live worker on queue {facts.queue!r}"
        return (
            f"no live worker on queue {facts.queue!r} has "
            f"{_count(facts.devices, 'device', 'devices')}"
        )
    if facts.ahead > 0:
        return f"{_count(facts.ahead, 'job', 'jobs')} ahead"
    return "next: waiting for a free worker"


def higher_level_edge(level: int, now: float, aging: float) -> float:
    """The largest rank key of a level above `level` now: ranking.level(key) > level exactly
    when key <= this edge."""
    return now - (level + 1 - _LEVEL_SLACK) * aging


def queue_wait(db: Database, settings: Settings, job_id: int) -> Wait | None:
    """The job's position and reason while it is queued, else None."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status != JobStatus.QUEUED:
            return None
        return queue_wait_in(session, job, settings)


def queue_wait_in(session: Session, job: Job, settings: Settings) -> Wait:
    """A queued `job`'s Wait, read in the caller's session."""
    policy = Policy(settings.priority_aging, settings.fair_share)
    now = utcnow().timestamp()
    edge = higher_level_edge(_band_level(session, job, now, policy.aging), now, policy.aging)
    ahead, higher = _ahead(session, job, edge)
    load = owner_loads(session, policy, now).get(job.owner_id, OwnerLoad())
    stale = settings.worker_stale_seconds
    fitting = fitting_workers(session, job.queue, job.devices, stale)
    facts = Facts(
        queue=job.queue,
        devices=job.devices,
        nodes=job.nodes,
        ahead=ahead,
        higher=higher,
        quota=load.held_back(job.devices * job.nodes),
        live=fitting if fitting else fitting_workers(session, job.queue, 0, stale),
        fitting=fitting,
        idle_fitting=_idle_fitting(session, job.queue, job.devices, stale) if job.nodes > 1 else 0,
    )
    return Wait(ahead + 1, reason(facts))


def _band_level(session: Session, job: Job, now: float, aging: float) -> int:
    """The level of the job's priority on its queue now (ranking.levels: the priority
    raised by its longest-waiting job's wait), one probe of `ix_jobs_priority_rank`."""
    oldest = session.scalar(
        select(func.min(Job.rank_key)).where(
            Job.status == JobStatus.QUEUED, Job.queue == job.queue, Job.priority == job.priority
        )
    )
    key = job.rank_key if oldest is None else min(oldest, job.rank_key)
    return levels([Candidate(job.id, None, key, 1, 1, job.priority)], now, aging)[job.priority]


def _ahead(session: Session, job: Job, edge: float) -> tuple[int, int]:
    """Queued jobs on the job's queue before it, and of those the ones of a higher level
    (rank key at most `edge`, all before the job's own key). Counted as two adjacent index
    ranges of ix_jobs_claim an owner, up to `edge` and from there to the job's (rank_key,
    id), so each job ahead is visited once."""
    before = tuple_(Job.rank_key, Job.id) < tuple_(literal(job.rank_key), literal(job.id))

    def count(owner: ColumnElement[bool], where: ColumnElement[bool]) -> ScalarSelect[int]:
        return (
            select(func.count())
            .where(Job.status == JobStatus.QUEUED, Job.queue == job.queue, owner, where)
            .scalar_subquery()
        )

    def higher_and_lower(owner: ColumnElement[bool]) -> tuple[Any, Any]:
        # `before` on both: a job's own key is above `edge`, but floats are floats.
        higher = count(owner, (Job.rank_key <= edge) & before)
        return higher, count(owner, (Job.rank_key > edge) & before)

    owned = select(*higher_and_lower(Job.owner_id == User.id)).select_from(User)
    rows = [tuple(r) for r in session.execute(owned.correlate(User))]
    rows.append(tuple(session.execute(select(*higher_and_lower(Job.owner_id.is_(None)))).one()))
    higher = sum(int(h or 0) for h, _ in rows)
    return higher + sum(int(b or 0) for _, b in rows), higher


def _busy_workers(session: Session) -> set[str]:
    """Workers running an attempt (its lease) or holding a node rank of one."""
    busy = {
        w
        for w in session.scalars(select(Job.lease_owner).where(Job.status == JobStatus.RUNNING))
        if w is not None
    }
    return busy | set(session.scalars(select(JobNode.worker)))


def _idle_fitting(session: Session, queue: str, devices: int, stale_after: float) -> int:
    """Live workers on `queue` with at least `devices` devices that hold no job now."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    rows = session.execute(
        select(Worker.name, Worker.queues, Worker.device_count, Worker.current_job_id).where(
            Worker.state == "up", Worker.heartbeat_at >= cutoff
        )
    ).all()
    busy = _busy_workers(session)
    return sum(
        1
        for r in rows
        if queue in (r.queues or [])
        and r.device_count >= devices
        and r.current_job_id is None
        and r.name not in busy
    )


@dataclass(frozen=True)
class Holding:
    """The job a worker holds: the attempt it runs, or (node_rank > 0) a rank it reserved
    of a multi-node attempt; `since` is when it took it."""

    job_id: int
    name: str
    owner_id: int | None
    owner: str | None
    priority: int
    nodes: int
    node_rank: int | None
    since: datetime | None
    preempt_by: int | None


def holdings(db: Database, workers: Iterable[Any]) -> dict[str, Holding]:
    """Worker name -> what it holds, for the given worker rows (their `name` and
    `current_job_id`): the running attempt it leases, a node rank it holds, or the job it
    says it runs. Idle workers are left out. Three queries whatever the number."""
    names = {w.name for w in workers}
    said = {w.name: w.current_job_id for w in workers if w.current_job_id is not None}
    if not names:
        return {}
    with db.session() as session:
        ranks = session.execute(
            select(JobNode.worker, JobNode.job_id, JobNode.node_rank, JobNode.joined_at)
            .join(Job, and_(Job.id == JobNode.job_id, Job.attempt == JobNode.attempt))
            .where(JobNode.worker.in_(names), Job.status == JobStatus.RUNNING)
        ).all()
        leased = session.execute(
            select(Job.lease_owner, Job.id).where(
                Job.status == JobStatus.RUNNING, Job.lease_owner.in_(names)
            )
        ).all()
        held: dict[str, tuple[int, int | None, datetime | None]] = {
            name: (job_id, None, None) for name, job_id in said.items()
        }
        held.update({r.lease_owner: (r.id, None, None) for r in leased})
        held.update({r.worker: (r.job_id, r.node_rank, r.joined_at) for r in ranks})
        rows = session.execute(
            select(Job, User.name)
            .outerjoin(User, User.id == Job.owner_id)
            .where(Job.id.in_({job_id for job_id, _, _ in held.values()}))
        ).all()
    found = {job.id: (job, owner) for job, owner in rows}
    return {
        name: _holding(found[job_id], rank, joined)
        for name, (job_id, rank, joined) in held.items()
        if job_id in found
    }


def _holding(row: tuple[Job, str | None], rank: int | None, joined: datetime | None) -> Holding:
    job, owner = row
    running = job.status == JobStatus.RUNNING
    return Holding(
        job_id=job.id,
        name=job.name,
        owner_id=job.owner_id,
        owner=owner,
        priority=job.priority,
        nodes=job.nodes,
        node_rank=rank if rank is not None else (0 if job.nodes > 1 and running else None),
        since=joined if rank is not None else (job.claimed_at if running else None),
        preempt_by=job.preempt_by if running else None,
    )
