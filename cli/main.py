"""seqtrain: run the service, submit and watch jobs.

seqtrain up                          API + worker + Redis + SQLite, no configuration
seqtrain submit examples/quickstart.yaml --wait | --follow
seqtrain jobs | show ID | logs ID [-f] | cancel ID | retry ID
seqtrain api | worker | migrate      the parts one by one (what docker compose runs)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from cli import services
from cli.client import ApiFailure, Client

TERMINAL = ("succeeded", "failed", "cancelled")
url_option = click.option(
    "--url",
    envvar="SEQTRAIN_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="API base URL (env SEQTRAIN_URL).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
token_option = click.option(
    "--token",
    envvar="SEQTRAIN_TOKEN",
    default=None,
    help="API token (env SEQTRAIN_TOKEN; default: the token `seqtrain up` wrote to var/dev-token).",
)


def var_dir() -> Path:
    return Path(os.environ.get("SEQTRAIN_VAR_DIR", "var"))


def make_client(url: str, token: str | None) -> Client:
    if token is None:
        dev_token = var_dir() / "dev-token"
        token = dev_token.read_text().strip() if dev_token.is_file() else None
    if not token:
        _fail(
            "no API token: pass --token, set SEQTRAIN_TOKEN, or run `seqtrain tokens create NAME`"
        )
    try:
        return Client(url, token)
    except ValueError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiFailure as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot reach the API: {exc}")


@click.group()
def main() -> None:
    """Seqtrain: a queue-driven training service for PyTorch sequence models."""


# ---------------------------------------------------------------- running the service


@main.command()
@json_option
def migrate(as_json: bool) -> None:
    """Apply database migrations (alembic upgrade head) to DATABASE_URL."""
    from migrations import upgrade
    from shared.settings import Settings

    upgrade(Settings.from_env().database_url)
    click.echo(json.dumps({"migrated": True}) if as_json else "database is at the latest revision")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers", default=2, show_default=True, type=int, help="gunicorn worker processes."
)
@click.option(
    "--threads",
    default=services.API_THREADS,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Threads per worker process: requests and live-page streams served at once; "
    "concurrent job submissions in one process are committed together.",
)
def api(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the API with gunicorn (gthread workers)."""
    cmd = services.api_command(host, port, workers, threads)
    os.execv(cmd[0], cmd)


@main.command()
@click.option(
    "--queues", "-Q", default="default", show_default=True, help="Comma-separated queues."
)
@click.option("--concurrency", "-c", default=1, show_default=True, type=int, help="Jobs at once.")
def worker(queues: str, concurrency: int) -> None:
    """Run a Celery worker that trains jobs from QUEUES."""
    cmd = services.worker_command(queues, concurrency)
    os.execv(cmd[0], cmd)


@main.command()
@click.option("--once", is_flag=True, help="Run one pass, print what it did as JSON, and exit.")
def reconcile(once: bool) -> None:
    """Recover jobs: requeue those whose worker died, enqueue again those Redis lost.

    Every worker runs this loop too (unless SEQTRAIN_WORKER_RECONCILER=0); running it alone
    suits deployments that keep it off the workers. Passes never overlap across processes.
    """
    import logging
    import threading

    from shared.settings import Settings
    from worker.reconciler import Reconciler

    settings = Settings.from_env()
    reconciler = Reconciler(_database(), settings, actor=f"reconciler@{settings.worker_name}")
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
    click.echo(f"reconciling every {settings.reconcile_seconds:g} s", err=True)
    reconciler.run_forever(stop)


@main.command()
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
    env = dict(os.environ)
    env.setdefault("SEQTRAIN_VAR_DIR", str(var.resolve()))
    env.setdefault("DATABASE_URL", f"sqlite:///{(var / 'seqtrain.db').resolve()}")
    env.setdefault("ARTIFACT_ROOT", str((var / "artifacts").resolve()))
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

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
            redis_proc, env["REDIS_URL"] = services.start_redis(var / "redis")
            children.append(("redis", redis_proc))
            click.echo(f"redis: {env['REDIS_URL']} (data in {var / 'redis'})")
        from migrations import upgrade

        upgrade(env["DATABASE_URL"])
        click.echo(f"database: {env['DATABASE_URL']}")
        token_note = ensure_dev_token(env["DATABASE_URL"], var)
        click.echo(f"artifacts: {env['ARTIFACT_ROOT']}")
        api_proc = subprocess.Popen(
            services.api_command(host, port), env=env, start_new_session=True
        )
        children.append(("api", api_proc))
        for index in range(worker_count):
            wenv = dict(env, SEQTRAIN_WORKER_NAME=f"{os.uname().nodename}:worker-{index}")
            children.append(
                (
                    "worker",
                    subprocess.Popen(
                        services.worker_command("default"), env=wenv, start_new_session=True
                    ),
                )
            )
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


# ---------------------------------------------------------------- users and tokens


def _database() -> Any:
    from shared.infra.db import Database
    from shared.settings import Settings

    return Database(Settings.from_env().database_url)


@main.group()
def users() -> None:
    """Manage users (talks to DATABASE_URL directly; run it where the service runs)."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see and manage every user's jobs.")
@json_option
def users_create(name: str, admin: bool, as_json: bool) -> None:
    """Create a user."""
    from shared.auth import AuthError, create_user

    try:
        user = create_user(_database(), name, is_admin=admin)
    except AuthError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({"id": user.id, "name": user.name, "is_admin": user.is_admin}))
        return
    click.echo(f"user {user.name} created (id {user.id}{', admin' if admin else ''})")


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """List users."""
    from shared.auth import list_users

    rows = [{"id": u.id, "name": u.name, "is_admin": u.is_admin} for u in list_users(_database())]
    if as_json:
        click.echo(json.dumps(rows))
    for row in [] if as_json else rows:
        click.echo(f"{row['id']:>4}  {row['name']}{'  (admin)' if row['is_admin'] else ''}")


@main.group()
def tokens() -> None:
    """Manage API tokens (talks to DATABASE_URL directly)."""


@tokens.command("create")
@click.argument("user")
@click.option("--label", default="", help="A note to tell tokens apart.")
@json_option
def tokens_create(user: str, label: str, as_json: bool) -> None:
    """Create a token for USER and print it (shown once; only a hash is stored)."""
    from shared.auth import AuthError, create_token

    try:
        row, token = create_token(_database(), user, label)
    except AuthError as exc:
        _fail(str(exc))
    click.echo(
        json.dumps({"id": row.id, "user": user, "label": label, "token": token})
        if as_json
        else token
    )


@tokens.command("list")
@click.argument("user")
@json_option
def tokens_list(user: str, as_json: bool) -> None:
    """List USER's tokens (prefixes only)."""
    from shared.auth import list_tokens

    rows = list_tokens(_database(), user)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "prefix": r.prefix,
                        "label": r.label,
                        "created_at": r.created_at.isoformat(),
                        "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
                        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                    }
                    for r in rows
                ]
            )
        )
        return
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.id:>4}  {row.prefix}...  {state:<8} {row.label}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
@json_option
def tokens_revoke(token_id: int, as_json: bool) -> None:
    """Revoke a token by id (see `tokens list`)."""
    from shared.auth import revoke_token

    if not revoke_token(_database(), token_id):
        _fail(f"no active token with id {token_id}")
    click.echo(
        json.dumps({"id": token_id, "revoked": True}) if as_json else f"token {token_id} revoked"
    )


# ---------------------------------------------------------------- using the service


def load_spec(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        _fail(f"{path} is not valid YAML/JSON: {exc}")


def wait_for(client: Client, job_id: int, as_json: bool, poll: float = 0.5) -> dict[str, Any]:
    last = None
    while True:
        job = _call(client.get, f"/api/v1/jobs/{job_id}")
        progress = (job["status"], job["epoch"], job["step"])
        if progress != last and not as_json:
            loss = job["latest_metrics"].get("train/loss", {}).get("value")
            extra = f" loss {loss:.4f}" if loss is not None else ""
            click.echo(
                f"job {job_id}: {job['status']} epoch {job['epoch']} step {job['step']}{extra}"
            )
            last = progress
        if job["status"] in TERMINAL:
            return dict(job)
        time.sleep(poll)


def job_progress(job: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """What --follow shows: epoch, step, loss, the fraction done and the seconds left. The
    planned steps come from `max_steps`, or from the steps per epoch once an epoch ended."""
    training = job["spec"].get("training", {})
    epochs, max_steps = training.get("epochs") or 0, training.get("max_steps")
    latest = job["latest_metrics"]
    planned = [float(max_steps)] if max_steps else []
    epoch_end = latest.get("val/loss") or latest.get("train/samples_per_s")
    if epoch_end and epoch_end["epoch"] > 0 and epochs:
        planned.append(epoch_end["step"] / epoch_end["epoch"] * epochs)
    fraction = None
    if job["status"] == "succeeded":
        fraction = 1.0
    elif planned and min(planned) > 0:
        fraction = min(1.0, job["step"] / min(planned))
    eta = None
    if job["status"] == "running" and job["started_at"] and fraction and 0 < fraction < 1:
        started = datetime.fromisoformat(job["started_at"])
        elapsed = ((now or datetime.now(UTC)) - started).total_seconds()
        eta = max(0.0, elapsed * (1 - fraction) / fraction)
    return {
        "id": job["id"],
        "status": job["status"],
        "attempt": job["attempt"],
        "epoch": job["epoch"],
        "epochs": epochs or None,
        "step": job["step"],
        "loss": latest.get("train/loss", {}).get("value"),
        "progress": fraction,
        "eta_seconds": eta,
    }


def progress_line(p: dict[str, Any], width: int = 24) -> str:
    if p["progress"] is None:
        bar = "[" + "?" * width + "]     "
    else:
        done = int(round(p["progress"] * width))
        bar = f"[{'#' * done}{'-' * (width - done)}] {p['progress'] * 100:3.0f}%"
    epochs = f"/{p['epochs']}" if p["epochs"] else ""
    loss = f"  loss {p['loss']:.4f}" if p["loss"] is not None else ""
    eta = ""
    if p["eta_seconds"] is not None:
        minutes, seconds = divmod(int(p["eta_seconds"]), 60)
        eta = f"  ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    return (
        f"job {p['id']} {p['status']:<9} {bar}  epoch {p['epoch']}{epochs}  "
        f"step {p['step']}{loss}{eta}"
    )


def follow(client: Client, job_id: int, as_json: bool, poll: float = 0.5) -> dict[str, Any]:
    """Poll the job until it ends, showing a progress bar (redrawn in place on a terminal,
    a line per change otherwise; with --json a JSON line per change)."""
    tty = not as_json and sys.stdout.isatty()
    last: tuple[Any, ...] | None = None
    while True:
        job = _call(client.get, f"/api/v1/jobs/{job_id}")
        p = job_progress(job)
        key = (p["status"], p["attempt"], p["epoch"], p["step"])
        if as_json and key != last:
            click.echo(json.dumps({"progress": p}))
        elif tty:
            click.echo("\r" + progress_line(p).ljust(100), nl=False)
        elif key != last:
            click.echo(progress_line(p))
        last = key
        if job["status"] in TERMINAL:
            if tty:
                click.echo()
            return dict(job)
        time.sleep(poll)


def finish_watch(job: dict[str, Any], as_json: bool) -> None:
    """Print a watched job's end (its JSON with --json) and exit 0 only if it succeeded."""
    if as_json:
        click.echo(json.dumps(job))
    else:
        metrics = {
            k: round(v["value"], 4)
            for k, v in job["latest_metrics"].items()
            if k.startswith("val/")
        }
        click.echo(f"job {job['id']} {job['status']} {json.dumps(metrics)}")
        if job["error"]:
            click.echo(job["error"], err=True)
    sys.exit(0 if job["status"] == "succeeded" else 1)


def watch(
    client: Client, created: dict[str, Any], wait: bool, follow_: bool, as_json: bool
) -> None:
    """After a submit or retry: print the new job, or watch it to its end."""
    if not (wait or follow_):
        click.echo(json.dumps(created) if as_json else f"job {created['id']} {created['status']}")
        return
    if not as_json:
        click.echo(f"job {created['id']} submitted")
    job = (follow if follow_ else wait_for)(client, created["id"], as_json)
    finish_watch(job, as_json)


wait_option = click.option(
    "--wait", is_flag=True, help="Wait for the job to finish; exit 1 unless it succeeds."
)
follow_option = click.option(
    "--follow",
    "follow_",
    is_flag=True,
    help="Like --wait, with a live progress bar (epoch, step, loss, ETA).",
)


@main.command()
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option("--name", help="Override the spec's name.")
@click.option("--queue", help="Override the spec's resources.queue.")
@wait_option
@follow_option
@url_option
@token_option
@json_option
def submit(
    spec_file: str,
    name: str | None,
    queue: str | None,
    wait: bool,
    follow_: bool,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Submit a job spec (YAML or JSON)."""
    spec = load_spec(spec_file)
    if not isinstance(spec, dict):
        _fail(f"{spec_file} must hold a mapping (the job spec), not {type(spec).__name__}")
    if name is not None:
        spec["name"] = name
    if queue is not None:
        spec.setdefault("resources", {})["queue"] = queue
    client = make_client(url, token)
    watch(client, _call(client.post, "/api/v1/jobs", spec), wait, follow_, as_json)


@main.command()
@click.argument("job_id", type=int)
@wait_option
@follow_option
@url_option
@token_option
@json_option
def retry(
    job_id: int, wait: bool, follow_: bool, url: str, token: str | None, as_json: bool
) -> None:
    """Run a finished job again: a new job with the same spec and dataset versions."""
    client = make_client(url, token)
    watch(client, _call(client.post, f"/api/v1/jobs/{job_id}/retry"), wait, follow_, as_json)


@main.command()
@click.argument("job_id", type=int)
@click.option("--attempt", type=int, help="Attempt whose log to print (default: the latest).")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing until the job ends.")
@click.option("--poll", default=0.5, show_default=True, type=float, help="Seconds between reads.")
@url_option
@token_option
@json_option
def logs(
    job_id: int,
    attempt: int | None,
    follow_: bool,
    poll: float,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Print a job's trainer output (stdout and stderr). With -f, follow it across attempts
    until the job ends. --json prints the API's chunks, one JSON object a line."""
    client = make_client(url, token)
    pinned, offset = attempt, 0
    while True:
        query = f"?offset={offset}" + (f"&attempt={pinned}" if pinned else "")
        chunk = _call(client.get, f"/api/v1/jobs/{job_id}/logs{query}")
        if as_json:
            click.echo(json.dumps(chunk))
        elif chunk["text"]:
            click.echo(chunk["text"], nl=False)
        if pinned is None and chunk["attempt"] > 0:
            pinned = chunk["attempt"]  # stay on this attempt until it ends
        if chunk["text"] and chunk["next_offset"] > offset:
            offset = chunk["next_offset"]
            continue  # more may be waiting: read on before sleeping
        if not follow_:
            return
        if chunk["complete"]:
            if attempt is not None:
                return  # the attempt asked for has ended
            job = _call(client.get, f"/api/v1/jobs/{job_id}")
            if job["status"] in TERMINAL:
                return
            if job["attempt"] > chunk["attempt"]:  # requeued: follow the next attempt
                pinned, offset = chunk["attempt"] + 1, 0
                if not as_json:
                    click.echo(f"--- attempt {pinned} ---", err=True)
                continue
        time.sleep(poll)


@main.command("jobs")
@click.option(
    "--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"])
)
@click.option("--limit", default=20, show_default=True, type=int)
@url_option
@token_option
@json_option
def list_jobs(status: str | None, limit: int, url: str, token: str | None, as_json: bool) -> None:
    """List jobs, newest first."""
    query = f"?limit={limit}" + (f"&status={status}" if status else "")
    page = _call(make_client(url, token).get, f"/api/v1/jobs{query}")
    if as_json:
        click.echo(json.dumps(page))
        return
    for job in page["jobs"]:
        click.echo(
            f"{job['id']:>6}  {job['status']:<10} {job['model_type']:<12} "
            f"epoch {job['epoch']:<4} {job['name']}"
        )


@main.command()
@click.argument("job_id", type=int)
@url_option
@token_option
@json_option
def show(job_id: int, url: str, token: str | None, as_json: bool) -> None:
    """Show one job: status, attempt, latest metrics, error, events."""
    job = _call(make_client(url, token).get, f"/api/v1/jobs/{job_id}")
    if as_json:
        click.echo(json.dumps(job))
        return
    click.echo(
        f"job {job['id']} {job['name']!r}: {job['status']} (attempt {job['attempt']}, "
        f"epoch {job['epoch']}, step {job['step']})"
    )
    for key, metric in sorted(job["latest_metrics"].items()):
        click.echo(f"  {key:<22} {metric['value']:.4f} (step {metric['step']})")
    for event in job["events"]:
        change = (
            f"{event['from_status'] or ''} -> {event['to_status']}"
            if event["to_status"]
            else "note"
        )
        click.echo(
            f"  {event['ts']}  {change:<22} {event['actor']}: {event['message'].splitlines()[0] if event['message'] else ''}"
        )
    if job["error"]:
        click.echo(f"error:\n{job['error']}")


@main.command()
@click.argument("job_id", type=int)
@url_option
@token_option
@json_option
def cancel(job_id: int, url: str, token: str | None, as_json: bool) -> None:
    """Cancel a queued or running job."""
    job = _call(make_client(url, token).post, f"/api/v1/jobs/{job_id}/cancel")
    click.echo(
        json.dumps(job)
        if as_json
        else f"job {job_id}: {job['status']}"
        + (" (cancel requested)" if job["status"] == "running" else "")
    )


# ---------------------------------------------------------------- inference and local runs


@main.command()
@click.argument("job_id", type=int)
@click.argument("texts", nargs=-1, required=True)
@url_option
@token_option
@json_option
def predict(
    job_id: int, texts: tuple[str, ...], url: str, token: str | None, as_json: bool
) -> None:
    """Classify TEXTS (or tag them) with a job's best checkpoint."""
    answer = _call(
        make_client(url, token).post, f"/api/v1/jobs/{job_id}/predict", {"texts": list(texts)}
    )
    if as_json:
        click.echo(json.dumps(answer))
        return
    for text, item in zip(texts, answer["predictions"], strict=True):
        if item.get("label") is not None:
            click.echo(f"{item['label']:<12} {item['probabilities'][item['label']]:.3f}  {text}")
        else:
            click.echo(
                " ".join(f"{t}/{g}" for t, g in zip(item["tokens"], item["tags"], strict=True))
            )


@main.command()
@click.argument("job_id", type=int)
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--length", default=200, show_default=True, type=int)
@click.option("--temperature", default=0.8, show_default=True, type=float)
@click.option("--top-k", type=int)
@click.option("--seed", type=int)
@url_option
@token_option
@json_option
def generate(
    job_id: int,
    prompt: str,
    length: int,
    temperature: float,
    top_k: int | None,
    seed: int | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Sample text from a language-modelling job's best checkpoint."""
    body = {
        "prompt": prompt,
        "length": length,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
    }
    answer = _call(make_client(url, token).post, f"/api/v1/jobs/{job_id}/generate", body)
    click.echo(json.dumps(answer) if as_json else prompt + answer["text"])


def _local_file(path: str | None, fmt: str | None, options: dict[str, Any]) -> Any:
    if path is None:
        return None
    from shared.data.datasets import DatasetUpload, parse
    from shared.data.formats import DatasetFormatError

    if fmt is None:
        _fail("--format is required with data files")
    try:
        upload = DatasetUpload.model_validate(
            {"format": fmt, **{k: v for k, v in options.items() if v is not None}}
        )
        return parse(Path(path).read_bytes(), upload.format, upload.parse_options())
    except DatasetFormatError as exc:
        _fail(f"{path}: {exc}")
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        _fail(str(exc))


@main.command("train")
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option(
    "--local", is_flag=True, required=True, help="Train in this process, without the queue."
)
@click.option("--train-file", help="Training data (default: the spec's built-in dataset).")
@click.option(
    "--validation-file", help="Validation data (default: val_fraction of the training data)."
)
@click.option("--test-file", help="Test data, evaluated once at the end.")
@click.option("--format", "fmt", type=click.Choice(["tsv", "csv", "jsonl", "text", "conll"]))
@click.option("--text-column")
@click.option("--label-column")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--output", type=click.Path(file_okay=False), help="Directory for checkpoints.")
@json_option
def train_local(
    spec_file: str,
    local: bool,
    train_file: str | None,
    validation_file: str | None,
    test_file: str | None,
    fmt: str | None,
    text_column: str | None,
    label_column: str | None,
    encoding: str,
    output: str | None,
    as_json: bool,
) -> None:
    """Train SPEC_FILE here with the service's trainer code; prints the final metrics."""
    from pydantic import ValidationError

    from shared.spec import parse_spec
    from shared.zoo.checkpoints import save_checkpoint
    from worker.data import Splits, load_splits
    from worker.trainer import Reporter, train

    try:
        spec = parse_spec(load_spec(spec_file))
    except ValidationError as exc:
        _fail(
            "invalid spec:\n"
            + "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        )
    options = {"text_column": text_column, "label_column": label_column, "encoding": encoding}
    if train_file:
        splits = Splits(
            _local_file(train_file, fmt, options),
            _local_file(validation_file, fmt, options),
            _local_file(test_file, fmt, options),
        )
    else:
        splits = load_splits(spec, None)
    out_dir = Path(output) if output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)

    def save(
        state: dict[str, Any], epoch: int, step: int, metrics: dict[str, float], is_best: bool
    ) -> None:
        if out_dir is not None:
            save_checkpoint(
                out_dir / f"step-{step:09d}{'-best' if is_best else ''}.safetensors", state
            )

    # With --json, stdout carries only the result; the trainer's progress goes to stderr.
    with contextlib.redirect_stdout(sys.stderr if as_json else sys.stdout):
        result = train(spec, Reporter(lambda rows, epoch, step: None, save), splits=splits)
    summary = {
        "step": result.step,
        "epoch": result.epoch,
        "stopped_early": result.stopped_early,
        **result.metrics,
    }
    click.echo(
        json.dumps(summary) if as_json else "\n".join(f"{k}: {v}" for k, v in summary.items())
    )


# ---------------------------------------------------------------- datasets


@main.group()
def datasets() -> None:
    """Upload and inspect datasets."""


def _dataset_line(d: dict[str, Any]) -> str:
    return f"{d['id']:>6}  {d['format']:<6} {d['rows']:>9,} rows  {d['name']}  ({d['reference']})"


@datasets.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["tsv", "csv", "jsonl", "text", "conll"])
)
@click.option("--name", help="Name to refer to it by (default: the file name).")
@click.option("--text-column", help="tsv/csv: text column header; jsonl: text field.")
@click.option("--label-column", help="tsv/csv: label column header; jsonl: label field.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--token-column", type=int, help="conll: token column index (default 0).")
@click.option("--tag-column", type=int, help="conll: tag column index (default -1, the last).")
@click.option(
    "--scheme", type=click.Choice(["auto", "IOB1", "IOB2", "BIOES"]), help="conll tag scheme."
)
@url_option
@token_option
@json_option
def datasets_upload(
    file: str,
    fmt: str,
    name: str | None,
    text_column: str | None,
    label_column: str | None,
    encoding: str,
    token_column: int | None,
    tag_column: int | None,
    scheme: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Upload FILE; prints the dataset with its statistics."""
    options = {
        "format": fmt,
        "name": name,
        "text_column": text_column,
        "label_column": label_column,
        "encoding": encoding,
        "token_column": token_column,
        "tag_column": tag_column,
        "scheme": scheme,
    }
    fields = {k: str(v) for k, v in options.items() if v is not None}
    content = Path(file).read_bytes()
    dataset = _call(
        make_client(url, token).upload, "/api/v1/datasets", Path(file).name, content, fields
    )
    if as_json:
        click.echo(json.dumps(dataset))
        return
    click.echo(_dataset_line(dataset))
    click.echo(json.dumps(dataset["stats"], indent=2))


@datasets.command("list")
@url_option
@token_option
@json_option
def datasets_list(url: str, token: str | None, as_json: bool) -> None:
    """List your datasets."""
    page = _call(make_client(url, token).get, "/api/v1/datasets")
    if as_json:
        click.echo(json.dumps(page))
        return
    for dataset in page["datasets"]:
        click.echo(_dataset_line(dataset))


@datasets.command("show")
@click.argument("dataset_id", type=int)
@url_option
@token_option
@json_option
def datasets_show(dataset_id: int, url: str, token: str | None, as_json: bool) -> None:
    """Show a dataset and its statistics (JSON; one line with --json)."""
    dataset = _call(make_client(url, token).get, f"/api/v1/datasets/{dataset_id}")
    click.echo(json.dumps(dataset) if as_json else json.dumps(dataset, indent=2))


@datasets.command("delete")
@click.argument("dataset_id", type=int)
@url_option
@token_option
@json_option
def datasets_delete(dataset_id: int, url: str, token: str | None, as_json: bool) -> None:
    """Delete a dataset (refused while a queued or running job uses it)."""
    _call(make_client(url, token).delete, f"/api/v1/datasets/{dataset_id}")
    click.echo(
        json.dumps({"id": dataset_id, "deleted": True})
        if as_json
        else f"dataset {dataset_id} deleted"
    )


if __name__ == "__main__":
    main()
