"""Running the service: `seqtrain up` (everything locally), and the parts one by one as
docker compose runs them: api, worker, reconcile, migrate."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli import services
from cli.common import database, json_option, settings, var_dir


@click.command()
@json_option
def migrate(as_json: bool) -> None:
    """Apply database migrations (alembic upgrade head) to DATABASE_URL."""
    from migrations import upgrade

    upgrade(settings().database_url)
    click.echo(json.dumps({"migrated": True}) if as_json else "database is at the latest revision")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers", default=2, show_default=True, type=int, help="gunicorn worker processes."
)
@click.option(
    "--connections",
    default=services.API_CONNECTIONS,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Connections each worker process serves at once (requests and live-page streams); "
    "concurrent job submissions in one process are committed together.",
)
def api(host: str, port: int, workers: int, connections: int) -> None:
    """Serve the API with gunicorn (gevent workers: open live-page streams hold no thread)."""
    cmd = services.api_command(host, port, workers, connections)
    os.execv(cmd[0], cmd)


@click.command()
@click.option(
    "--queues", "-Q", default="default", show_default=True, help="Comma-separated queues."
)
@click.option("--concurrency", "-c", default=1, show_default=True, type=int, help="Jobs at once.")
def worker(queues: str, concurrency: int) -> None:
    """Run a Celery worker that trains jobs from QUEUES."""
    cmd = services.worker_command(queues, concurrency)
    os.execv(cmd[0], cmd)


@click.command()
@click.option("--once", is_flag=True, help="Run one pass, print what it did as JSON, and exit.")
def reconcile(once: bool) -> None:
    """Recover jobs: requeue those whose worker died, enqueue again those Redis lost.

    Every worker runs this loop too (unless SEQTRAIN_WORKER_RECONCILER=0); running it alone
    suits deployments that keep it off the workers. Passes never overlap across processes.
    """
    import logging
    import threading

    from worker.reconciler import Reconciler

    config = settings()
    reconciler = Reconciler(database(), config, actor=f"reconciler@{config.worker_name}")
    if once:
        done = reconciler.run_once(force=True)
        click.echo(
            json.dumps(
                {"requeued": done.requeued, "failed": done.failed, "enqueued": done.enqueued}
            )
        )
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"reconciling every {config.reconcile_seconds:g} s", err=True)
    reconciler.run_forever(stop)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers", "worker_count", default=1, show_default=True, type=int, help="Worker processes."
)
def up(host: str, port: int, worker_count: int) -> None:
    """Start everything locally: Redis (unless REDIS_URL), migrations, the API and workers."""
    var = var_dir()
    var.mkdir(parents=True, exist_ok=True)
    token_note = ""
    env = local_env(var)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    tied = die_with_me()

    def shutdown(*_: Any) -> None:
        click.echo("stopping: worker (running jobs are requeued), API, Redis ...")
        for name, proc in reversed(children):
            services.stop(proc, signal.SIGTERM, timeout=30 if name == "worker" else 10)
        click.echo("stopped")
        sys.exit(0)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    try:
        if not env.get("REDIS_URL"):
            redis_proc, env["REDIS_URL"] = services.start_redis(var / "redis", preexec_fn=tied)
            children.append(("redis", redis_proc))
            click.echo(f"redis: {env['REDIS_URL']} (data in {var / 'redis'})")
        from migrations import upgrade

        upgrade(env["DATABASE_URL"])
        click.echo(f"database: {env['DATABASE_URL']}")
        token_note = ensure_dev_token(env["DATABASE_URL"], var)
        click.echo(f"artifacts: {env['ARTIFACT_ROOT']}")
        api_proc = subprocess.Popen(
            services.api_command(host, port), env=env, start_new_session=True, preexec_fn=tied
        )
        children.append(("api", api_proc))
        children.extend(("worker", proc) for proc in start_workers(env, worker_count, tied))
        services.wait_for_port(port, api_proc, "api")
    except Exception as exc:
        click.echo(f"error: {exc}", err=True)
        shutdown()
    click.echo(f"Seqtrain is up: http://{host}:{port}  (Ctrl-C stops it)")
    click.echo(token_note)
    while True:
        for name, proc in children:
            if proc.poll() is not None:
                click.echo(f"error: {name} exited with code {proc.returncode}", err=True)
                shutdown()
        time.sleep(0.5)


def local_env(var: Path) -> dict[str, str]:
    """The children's environment: this one, with the var dir's defaults filled in."""
    env = dict(os.environ)
    env.setdefault("SEQTRAIN_VAR_DIR", str(var.resolve()))
    env.setdefault("DATABASE_URL", f"sqlite:///{(var / 'seqtrain.db').resolve()}")
    env.setdefault("ARTIFACT_ROOT", str((var / "artifacts").resolve()))
    return env


def start_workers(
    env: dict[str, str], count: int, tied: Callable[[], None] | None
) -> list[subprocess.Popen[bytes]]:
    """`count` workers on the default queue, each named after this host and its index."""
    return [
        subprocess.Popen(
            services.worker_command("default"),
            env=dict(env, SEQTRAIN_WORKER_NAME=f"{os.uname().nodename}:worker-{index}"),
            start_new_session=True,
            preexec_fn=tied,
        )
        for index in range(count)
    ]


def die_with_me() -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux send the child SIGTERM when this process dies, however
    it dies (SIGKILL included): `seqtrain up`'s Redis, API and workers never outlive it.
    Each stops as on Ctrl-C (the worker requeues its running jobs). None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not in the forked child
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # died between the fork and the prctl
            os._exit(1)

    return arm


PR_SET_PDEATHSIG = 1


def ensure_dev_token(database_url: str, var: Path) -> str:
    """On first start: an admin user and its token in <var>/dev-token (mode 600)."""
    from shared.auth import ensure_admin
    from shared.infra.db import Database

    db = Database(database_url)
    try:
        _, token = ensure_admin(db)
    finally:
        db.dispose()
    path = var / "dev-token"
    if token is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return f"admin token (also in {path}, mode 600): {token}"
    if path.is_file():
        return f"admin token: in {path}"
    return "admin exists; create a token with `seqtrain tokens create admin`"
