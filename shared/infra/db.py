"""Engine and session factory, one per process.

SQLite (the default) gets WAL, a 10 s busy timeout and BEGIN IMMEDIATE transactions, so a
read-then-write never fails at once with SQLITE_BUSY. PostgreSQL gets a pre-pinged pool, or
with `ping_after_idle` (the API) one that pings only a connection idle that long: a busy
pool skips the extra round trip per checkout, and a connection the server dropped while in
use fails that request (503) and invalidates the pool, so the next one reconnects.
After a fork, call `Database.after_fork()` so pooled connections never cross processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, ping_after_idle: float | None = None, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    if ping_after_idle is None:
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)
    engine = create_engine(url, pool_recycle=1800, pool_size=10, max_overflow=20, **kwargs)
    _ping_idle_connections(engine, ping_after_idle)
    return engine


def _ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout only when it sat idle `idle_seconds` or more."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in_at")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError(str(exc)) from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN (pysqlite's own handling is broken).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that later writes can fail
        # with SQLITE_BUSY immediately instead of waiting for busy_timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def affected_rows(result: Any) -> int:
    """Rows matched by an UPDATE or DELETE (the outcome of every conditional transition)."""
    return int(result.rowcount)


class Database:
    """An engine plus its session factory."""

    def __init__(self, url: str, ping_after_idle: float | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, ping_after_idle)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def after_fork(self) -> None:
        self.engine.dispose(close=False)

    def dispose(self) -> None:
        self.engine.dispose()
