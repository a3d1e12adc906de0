"""The worker registry: who is alive, with which devices and queues, training what.

A worker registers when Celery is ready, then renews `heartbeat_at` every few seconds
(worker.agent). A worker whose heartbeat is older than `stale_after` seconds is not live;
its running job is recovered by the reconciler when the job's lease expires.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from shared.infra.db import Database, affected_rows
from shared.infra.models import Worker, utcnow

WORKER_STATES = ("up", "draining", "stopped")
# Registrations in this process: cached views of the registry (routing) refresh when it moves.
_changes = 0


def changes() -> int:
    return _changes


def register(
    db: Database,
    *,
    name: str,
    hostname: str,
    pid: int,
    queues: list[str],
    device_kind: str,
    device_count: int,
    devices: list[dict[str, Any]],
) -> None:
    """Insert or replace this worker's row (a restarted worker keeps its name)."""
    global _changes
    _changes += 1
    now = utcnow()
    with db.session() as session:
        row = session.get(Worker, name)
        if row is None:
            row = Worker(name=name)
            session.add(row)
        row.hostname = hostname
        row.pid = pid
        row.queues = list(queues)
        row.device_kind = device_kind
        row.device_count = device_count
        row.devices = list(devices)
        row.state = "up"
        row.current_job_id = None
        row.started_at = now
        row.heartbeat_at = now


def heartbeat(db: Database, name: str, *, state: str | None = None) -> bool:
    """Renew the heartbeat (and optionally the state); False if the row is gone."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if state is not None:
        if state not in WORKER_STATES:
            raise ValueError(f"unknown worker state {state!r}")
        values["state"] = state
    with db.session() as session:
        return bool(
            affected_rows(session.execute(update(Worker).where(Worker.name == name).values(values)))
        )


def set_current_job(db: Database, name: str, job_id: int | None) -> None:
    with db.session() as session:
        session.execute(
            update(Worker)
            .where(Worker.name == name)
            .values(current_job_id=job_id, heartbeat_at=utcnow())
        )


def mark_stopped(db: Database, name: str) -> None:
    with db.session() as session:
        session.execute(
            update(Worker)
            .where(Worker.name == name)
            .values(state="stopped", current_job_id=None, heartbeat_at=utcnow())
        )


def list_workers(db: Database, *, include_stopped: bool = False) -> list[Worker]:
    with db.session() as session:
        query = select(Worker).order_by(Worker.name)
        if not include_stopped:
            query = query.where(Worker.state != "stopped")
        return list(session.scalars(query))


def live_workers(db: Database, stale_after: float) -> list[Worker]:
    """Workers not stopped whose heartbeat is younger than `stale_after` seconds."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    with db.session() as session:
        return list(
            session.scalars(
                select(Worker)
                .where(Worker.state != "stopped", Worker.heartbeat_at >= cutoff)
                .order_by(Worker.name)
            )
        )


def forget_stale(db: Database, older_than: float) -> int:
    """Delete rows of workers silent for more than `older_than` seconds; returns how many."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    with db.session() as session:
        return affected_rows(session.execute(delete(Worker).where(Worker.heartbeat_at < cutoff)))
