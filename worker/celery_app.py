"""The Celery app: `celery -A worker.celery_app worker -P threads -c 1 -Q default`.

One worker slot trains one job at a time; scale with more worker processes (compose
`--scale worker=N`). The threads pool suits the supervisor, which only waits on a child
process; prefork works too (the engine is disposed after each fork).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from celery import signals

from shared.infra.db import Database
from shared.infra.queue import make_celery
from shared.settings import Settings

if TYPE_CHECKING:
    from worker.agent import WorkerAgent
    from worker.forkserver.client import ForkServer

settings = Settings.from_env()
app = make_celery(settings, "seqtrain-worker")
app.conf.update(imports=["worker.tasks"])

# Set when the worker begins a warm shutdown; supervisors then stop and requeue their job.
shutting_down = threading.Event()
_db: Database | None = None
_agent: WorkerAgent | None = None
_forkserver: ForkServer | None = None


def forkserver() -> ForkServer | None:
    """The worker's warm fork-server, handed to each supervisor; None without one."""
    return _forkserver


def database() -> Database:
    global _db
    if _db is None:
        _db = Database(settings.database_url)
    return _db


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pooled connections must never cross a fork (prefork pool).
    if _db is not None:
        _db.after_fork()


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    # Imported here: the agent's modules are not needed by code that only imports the app.
    from worker.agent import WorkerAgent

    global _agent, _forkserver
    try:
        queues = sorted(sender.app.amqp.queues.consume_from)
    except AttributeError:
        queues = [settings.default_queue]
    _agent = WorkerAgent(database(), settings, queues)
    _agent.start()
    if settings.forkserver:
        from worker.forkserver.client import ForkServer

        _forkserver = ForkServer(
            settings.var_dir / "logs" / f"forkserver-{settings.worker_name}.log"
        )


@signals.worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    shutting_down.set()
    if _agent is not None:
        _agent.draining = True


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    if _agent is not None:
        _agent.shutdown()
    if _forkserver is not None:
        _forkserver.stop()
