"""The claim's cost with a deep queue (bench/scheduling.py's `claim` scenario): 100,000
queued jobs of 50 owners in a scratch database, a few registered workers, and 1,000 calls
of shared.jobs.scheduler.next_work, each claiming a job, timed one by one. Between calls,
untimed, the worker's previous job is finished (shared.jobs.finish, which charges its
owner's usage), so the running set stays at one job a worker, as in production.

Also timed on the same backlog: shared.jobs.waiting.queue_wait (a queued job's position and
reason, what GET /api/v1/jobs/<id> shows) and one shared.jobs.preemption.preempt pass (what
the reconciler runs every pass).

PostgreSQL: a database created on SEQTRAIN_BENCH_POSTGRES_URL's server (default the local
one, user postgres), vacuumed and analysed after the insert as autovacuum would leave it,
and dropped at the end; SQLite: a file in a temporary directory.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, make_url, select, text, update

from bench.scheduling_service import log, percentiles, short_spec
from migrations import upgrade
from shared import jobs
from shared.auth import create_user
from shared.infra.db import Database
from shared.infra.models import Job, User, utcnow
from shared.jobs import scheduler, workers
from shared.jobs.preemption import preempt
from shared.jobs.ranking import Policy
from shared.jobs.submission import NewJob, job_values
from shared.protocol import JobStatus
from shared.settings import Settings
from shared.spec import parse_spec

POSTGRES_ADMIN = os.environ.get(
    "SEQTRAIN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
OWNERS, WORKERS, BATCH = 50, 4, 5000
# Owners with a soft quota (max_running 2): their claims lock the owner's row.
LIMITED_OWNERS = 5
PRIORITIES = (30, 50, 50, 50, 70)
# The backlog was submitted over the last hour: levels differ by aging as well.
SPREAD_SECONDS = 3600.0


@contextmanager
def scratch_database(backend: str, admin_url: str = POSTGRES_ADMIN) -> Iterator[str]:
    """A migrated, empty database on `backend`, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'claim.db'}"
            upgrade(url)
            yield url
        return
    admin = make_url(admin_url)
    name = f"seqtrain_bench_claim_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def fill(db: Database, total: int, aging: float) -> list[int]:
    """`total` queued jobs round-robin over OWNERS users; returns the owners' ids. Every
    column as a submit writes it (shared.jobs.submission.job_values: rank key included)."""
    owners = [create_user(db, f"owner{n:02d}").id for n in range(OWNERS)]
    with db.session() as session:
        session.execute(
            update(User).where(User.id.in_(owners[:LIMITED_OWNERS])).values(max_running=2)
        )
    rng = random.Random(7)
    specs = {p: parse_spec(short_spec("backlog", priority=p)) for p in PRIORITIES}
    now = utcnow()
    for start in range(0, total, BATCH):
        rows = []
        for n in range(start, min(total, start + BATCH)):
            spec = specs[rng.choice(PRIORITIES)]
            new = NewJob(spec, owners[n % OWNERS], aging=aging)
            submitted = now - timedelta(seconds=rng.uniform(0, SPREAD_SECONDS))
            rows.append(job_values(new, submitted))
        with db.session() as session:
            session.execute(insert(Job), rows)
    if not db.is_sqlite:  # as autovacuum leaves a table after a bulk insert
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return owners


def register_workers(db: Database) -> list[str]:
    names = [f"claim-worker-{n}" for n in range(WORKERS)]
    for name in names:
        workers.register(
            db,
            name=name,
            hostname="bench",
            pid=0,
            queues=["default"],
            device_kind="cpu",
            device_count=1,
            devices=[],
        )
    return names


def time_claims(db: Database, names: list[str], calls: int, policy: Policy) -> dict[str, Any]:
    """`calls` next_work calls round-robin over the workers, each timed; the worker's
    previous job is finished first, untimed."""
    holding: dict[str, tuple[int, int] | None] = dict.fromkeys(names)
    timings, cpu, empty = [], [], 0
    for n in range(calls):
        name = names[n % len(names)]
        held = holding[name]
        if held is not None:
            jobs.finish(db, held[0], held[1], JobStatus.SUCCEEDED, "done", name)
        if n % 100 == 0:
            for each in names:
                workers.heartbeat(db, each)
        started, cpu_started = time.monotonic(), time.process_time()
        work = scheduler.next_work(db, name, "default", 1, 600.0, policy, 30.0)
        timings.append((time.monotonic() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        holding[name] = None if work is None else (work.job_id, work.attempt)
        empty += work is None
    return {
        "calls": calls,
        "claimed": calls - empty,
        "ms": percentiles(timings, 2),
        "client_cpu_ms": percentiles(cpu, 2),
    }


def time_waits(db: Database, samples: int) -> dict[str, Any]:
    """queue_wait for `samples` queued jobs picked at random (front, middle and back)."""
    from shared.jobs import waiting

    settings = Settings.from_env({"DATABASE_URL": db.url})
    with db.session() as session:
        ids = list(session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED)))
    rng = random.Random(11)
    timings, positions = [], []
    for job_id in rng.sample(ids, min(samples, len(ids))):
        started = time.monotonic()
        wait = waiting.queue_wait(db, settings, job_id)
        timings.append((time.monotonic() - started) * 1000)
        positions.append(wait.position if wait else 0)
    return {
        "samples": len(timings),
        "positions": [min(positions), max(positions)],
        "ms": percentiles(timings, 2),
    }


def time_preempt_pass(db: Database, passes: int) -> dict[str, Any]:
    settings = Settings.from_env({"DATABASE_URL": db.url})
    timings = []
    for _ in range(passes):
        started = time.monotonic()
        preempt(db, settings)
        timings.append((time.monotonic() - started) * 1000)
    return {"passes": passes, "ms": percentiles(timings, 2)}


def claim_bench(backend: str, total: int, calls: int) -> dict[str, Any]:
    with scratch_database(backend) as url:
        db = Database(url)
        try:
            return _claim_bench(db, backend, total, calls)
        finally:
            db.dispose()


def _claim_bench(db: Database, backend: str, total: int, calls: int) -> dict[str, Any]:
    policy = Policy(aging=600.0, fair_share=True)
    started = time.monotonic()
    fill(db, total, policy.aging)
    filled = time.monotonic() - started
    log(f"claim/{backend}: {total} queued jobs inserted in {filled:.1f} s")
    names = register_workers(db)
    warm = scheduler.next_work(db, names[0], "default", 1, 600.0, policy, 30.0)  # connect
    if warm is not None:
        jobs.finish(db, warm.job_id, warm.attempt, JobStatus.SUCCEEDED, "done", names[0])
    claims = time_claims(db, names, calls, policy)
    log(f"claim/{backend}: next_work {claims['ms']}")
    with db.session() as session:
        queued = session.scalar(select(func.count()).where(Job.status == JobStatus.QUEUED))
        running = session.scalar(select(func.count()).where(Job.status == JobStatus.RUNNING))
    waits = time_waits(db, 200)
    log(f"claim/{backend}: queue_wait {waits['ms']}")
    return {
        "backend": backend,
        "queued_jobs": total,
        "owners": OWNERS,
        "owners_with_max_running": LIMITED_OWNERS,
        "workers": len(names),
        "insert_s": round(filled, 1),
        "next_work": claims,
        "queued_after": queued,
        "running_after": running,
        "queue_wait": waits,
        "preempt_pass": time_preempt_pass(db, 20),
    }
