"""The worker's own background thread: registration, heartbeat and the reconciler loop.

Started when Celery reports the worker ready; it never imports torch (devices are probed
in a separate process, see worker.devices).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from shared.infra.db import Database
from shared.jobs import workers
from shared.settings import Settings
from worker import devices
from worker.reconciler import Reconciler

log = logging.getLogger(__name__)


class WorkerAgent(threading.Thread):
    def __init__(self, db: Database, settings: Settings, queues: list[str]) -> None:
        super().__init__(name="seqtrain-agent", daemon=True)
        self.db, self.settings, self.queues = db, settings, queues
        self.stop = threading.Event()
        self.draining = False

    def register(self) -> None:
        info = devices.probe_once(self.settings)
        workers.register(
            self.db,
            name=self.settings.worker_name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            device_kind=info.kind,
            device_count=info.count,
            devices=info.devices,
        )
        log.info(
            "worker %s registered: %d %s device(s), queues %s",
            self.settings.worker_name,
            info.count,
            info.kind,
            ",".join(self.queues),
        )

    def run(self) -> None:
        registered = False
        reconciler: Reconciler | None = None  # built once registered: it opens the store
        next_reconcile = time.monotonic() + self.settings.reconcile_seconds
        while not self.stop.is_set():
            try:
                if not registered:
                    self.register()
                    registered = True
                elif not workers.heartbeat(
                    self.db, self.settings.worker_name, state="draining" if self.draining else None
                ):
                    registered = False  # our row was removed: register again
                    continue
                if self.settings.worker_reconciler and time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + self.settings.reconcile_seconds
                    if reconciler is None:
                        actor = f"reconciler@{self.settings.worker_name}"
                        reconciler = Reconciler(self.db, self.settings, actor=actor)
                    reconciler.run_once()
            except Exception as exc:  # the database or Redis is down: keep trying
                log.warning("worker agent: %s: %s", type(exc).__name__, exc)
            self.stop.wait(min(self.settings.heartbeat_seconds, self.settings.reconcile_seconds))

    def shutdown(self) -> None:
        self.stop.set()
        try:
            workers.mark_stopped(self.db, self.settings.worker_name)
        except Exception as exc:
            log.warning("worker agent: could not mark the worker stopped: %s", exc)
