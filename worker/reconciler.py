"""The reconciler: SQL is the truth, Redis only transport. Every few seconds it

- takes back running jobs whose lease expired (their worker died): requeued to resume from
  the last checkpoint, or failed once they have used `max_attempts`;
- enqueues again queued jobs that have no message on Redis (Redis flushed or restarted, or
  the API could not reach it at submit).

It runs as a thread in every worker (one pass at a time across all of them, through a
short Redis lock) or alone as `seqtrain reconcile`. Every action is a conditional UPDATE,
so two reconcilers, or a reconciler racing a worker, never double-run a job: an extra
message is harmless because only one claim can succeed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import redis

from shared import jobs
from shared.infra.db import Database
from shared.infra.queue import JobQueue, job_ids_with_messages, redis_client
from shared.protocol import RECONCILER_LOCK_KEY, JobStatus
from shared.settings import Settings

log = logging.getLogger(__name__)

LOCK_KEY = RECONCILER_LOCK_KEY


@dataclass
class Pass:
    """What one pass did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    enqueued: list[int] = field(default_factory=list)
    skipped: bool = False


class Reconciler:
    def __init__(self, db: Database, settings: Settings, actor: str = "reconciler") -> None:
        self.db, self.settings, self.actor = db, settings, actor
        self.redis = redis_client(settings.redis_url)
        self.queue = JobQueue(settings)
        # Monotonic time of the last pass that reached the database, and until when expired
        # leases are left alone: after a database outage (or at start) supervisors that were
        # cut off too get one lease period to renew before their jobs are taken back.
        self.last_ok: float | None = None
        self.leases_from = 0.0

    def _lock(self) -> bool:
        """One pass at a time across all workers; the lock lapses by itself."""
        ttl_ms = max(1000, int(self.settings.reconcile_seconds * 900))
        return bool(self.redis.set(LOCK_KEY, self.actor, nx=True, px=ttl_ms))

    def run_once(self, *, force: bool = False) -> Pass:
        """One pass. `force` skips the cross-worker lock and the post-outage lease grace."""
        done = Pass()
        try:
            if not force and not self._lock():
                done.skipped = True
                return done
        except redis.RedisError as exc:
            # Without Redis nothing can be enqueued; leases can still be recovered in SQL and
            # their jobs are enqueued on a later pass.
            log.warning("reconciler: Redis unreachable (%s)", exc)
        now = time.monotonic()
        expired = jobs.expired_leases(self.db)
        if not force and (self.last_ok is None or now - self.last_ok > self.settings.lease_seconds):
            self.leases_from = now + self.settings.lease_seconds
        self.last_ok = now
        if now < self.leases_from:
            expired = []
        for job_id, attempt in expired:
            status = jobs.recover_expired(self.db, job_id, attempt, self.actor)
            if status == JobStatus.QUEUED:
                done.requeued.append(job_id)
                try:
                    self.queue.enqueue_job(job_id, jobs.get_job(self.db, job_id).queue)
                except Exception as exc:  # stays queued in SQL; a later pass enqueues it
                    log.warning("reconciler: enqueue of job %s failed: %s", job_id, exc)
            elif status is not None:
                done.failed.append(job_id)
        waiting = jobs.queued_awaiting_message(self.db, self.settings.enqueue_grace_seconds)
        if waiting:
            wanted: dict[str, set[int]] = {}
            for job_id, queue in waiting:
                wanted.setdefault(queue, set()).add(job_id)
            present = job_ids_with_messages(
                self.redis, wanted, unacked_max_age=self.settings.enqueue_grace_seconds
            )
            lost = [(job_id, queue) for job_id, queue in waiting if job_id not in present]
            if lost:
                self.queue.enqueue_jobs(lost)  # one round trip, all or none
                done.enqueued.extend(job_id for job_id, _ in lost)
                jobs.mark_enqueued(self.db, done.enqueued)
        if done.requeued or done.failed or done.enqueued:
            log.info(
                "reconciler: requeued %s, failed %s, enqueued again %s",
                done.requeued,
                done.failed,
                done.enqueued,
            )
        return done

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.reconcile_seconds):
            try:
                self.run_once()
            except Exception as exc:  # a database or Redis outage: try again next time
                log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
