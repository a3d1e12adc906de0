"""Preemption: a waiting job that outranks a running one makes room for itself.

When a queued job's level (its priority with aging, shared.jobs.ranking.levels) is at
least SEQTRAIN_PREEMPT_MARGIN above a running job's priority and no free worker on its
queue could start it, the lowest-ranked running job whose worker could hold it (the
lowest priority, the most recently started first) is asked to make room: its `preempt_by` is set, its supervisor sees it within a
poll, drains the trainer (a checkpoint at the current step) and requeues the job, which
keeps its rank key and later resumes exactly; its event reads "preempted by job N".

Guards: a victim has run SEQTRAIN_PREEMPT_MIN_RUNTIME seconds in this attempt, has been
preempted fewer than SEQTRAIN_MAX_PREEMPTIONS times, is `resources.preemptible` (only an
admin may submit a job that is not) and runs on one node; the waiting job needs one node.
SEQTRAIN_PREEMPTION=0 turns it off. The API checks right after a submit, and the
reconciler on every pass (levels rise as jobs wait).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.infra.db import Database, affected_rows
from shared.infra.models import Job, JobNode, Worker, utcnow
from shared.jobs.events import add_event
from shared.jobs.ranking import Candidate, Policy, levels, order
from shared.jobs.scheduler import heads, owner_loads
from shared.protocol import JobStatus
from shared.settings import Settings

# Waiting jobs looked at per queue and pass (the best ones; the rest cannot outrank more).
LOOK_AHEAD = 8


@dataclass(frozen=True)
class Running:
    job_id: int
    attempt: int
    priority: int
    worker: str
    claimed_ts: float


def preempt(
    db: Database, settings: Settings, queues: Iterable[str] | None = None
) -> list[tuple[int, int]]:
    """Ask running jobs to make room for waiting jobs that outrank them, on `queues` (every
    live worker's by default). Returns (running job, waiting job) pairs asked now."""
    if not settings.preemption:
        return []
    policy = Policy(settings.priority_aging, settings.fair_share)
    now = utcnow()
    asked: list[tuple[int, int]] = []
    with db.session() as session:
        workers = _live_workers(session, settings.worker_stale_seconds)
        wanted = set(queues) if queues is not None else {q for w in workers for q in w[1]}
        plans = []
        for queue in sorted(wanted):
            on_queue = {name: count for name, qs, count in workers if queue in qs}
            if not on_queue:
                continue
            loads = owner_loads(session, policy, now.timestamp())
            found = heads(session, queue, max(on_queue.values()))
            ranked = order(found, loads, policy, now.timestamp())[:LOOK_AHEAD]
            level_of = levels(found, now.timestamp(), policy.aging)
            plans.extend(
                _plan(session, settings, queue, on_queue, ranked, level_of, now.timestamp())
            )
    for victim, attempt, waiting, why in plans:
        if _ask(db, victim, attempt, waiting, why):
            asked.append((victim, waiting))
    return asked


def _live_workers(session: Session, stale_after: float) -> list[tuple[str, list[str], int]]:
    cutoff = utcnow() - timedelta(seconds=stale_after)
    rows = session.execute(
        select(Worker.name, Worker.queues, Worker.device_count).where(
            Worker.state == "up", Worker.heartbeat_at >= cutoff
        )
    ).all()
    return [(r.name, list(r.queues or []), r.device_count) for r in rows]


def _plan(
    session: Session,
    settings: Settings,
    queue: str,
    on_queue: dict[str, int],
    ranked: list[Candidate],
    level_of: dict[int, int],
    now: float,
) -> list[tuple[int, int, int, str]]:
    """(victim, its attempt, waiting job, why) for the waiting jobs of `queue` that need it."""
    busy = set(session.scalars(select(Job.lease_owner).where(Job.status == JobStatus.RUNNING)))
    busy |= set(session.scalars(select(JobNode.worker)))
    free = {name: count for name, count in on_queue.items() if name not in busy}
    making_room = set(
        session.scalars(select(Job.preempt_by).where(Job.status == JobStatus.RUNNING))
    )
    victims = _victims(session, settings, queue, now)
    plans = []
    for waiting in ranked:
        fits = [name for name, count in free.items() if count >= waiting.devices]
        if fits:  # a free worker takes it without anyone making room
            del free[fits[0]]
            continue
        if waiting.job_id in making_room:
            continue
        waiting_level = level_of[waiting.priority]
        eligible = [
            v
            for v in victims
            if v.priority + settings.preempt_margin <= waiting_level
            and on_queue.get(v.worker, 0) >= waiting.devices
        ]
        if not eligible:
            continue
        victim = min(eligible, key=lambda v: (v.priority, -v.claimed_ts))
        victims.remove(victim)
        why = (
            f"asked to make room for job {waiting.job_id} (priority {waiting_level} now, "
            f"this job's {victim.priority})"
        )
        plans.append((victim.job_id, victim.attempt, waiting.job_id, why))
    return plans


def _victims(session: Session, settings: Settings, queue: str, now: float) -> list[Running]:
    """Running jobs on `queue` that may be preempted now."""
    ran_since = utcnow() - timedelta(seconds=settings.preempt_min_runtime)
    rows = session.execute(
        select(Job.id, Job.attempt, Job.priority, Job.lease_owner, Job.claimed_at).where(
            Job.status == JobStatus.RUNNING,
            Job.queue == queue,
            Job.nodes == 1,
            Job.preemptible.is_(True),
            Job.preempt_by.is_(None),
            Job.cancel_requested.is_(False),
            Job.preemptions < settings.max_preemptions,
            Job.claimed_at <= ran_since,
        )
    ).all()
    return [
        Running(r.id, r.attempt, r.priority, r.lease_owner or "", r.claimed_at.timestamp())
        for r in rows
    ]


def _ask(db: Database, job_id: int, attempt: int, waiting: int, why: str) -> bool:
    """Set the running attempt's `preempt_by` (once) and note it."""
    with db.session() as session:
        done = affected_rows(
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.attempt == attempt,
                    Job.status == JobStatus.RUNNING,
                    Job.preempt_by.is_(None),
                )
                .values(preempt_by=waiting)
            )
        )
        if done:
            add_event(session, job_id, attempt, None, None, "scheduler", why)
        return bool(done)
