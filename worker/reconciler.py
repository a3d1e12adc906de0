"""The reconciler: SQL is the truth, Redis only transport. Every few seconds it

- takes back running jobs whose lease expired (their worker died): requeued to resume from
  the last checkpoint, or failed once they have used `max_attempts`;
- enqueues again queued jobs that have no message on Redis (Redis flushed or restarted, or
  the API could not reach it at submit);
- does the same for job outputs (batch predictions, exports): expired leases requeued or
  failed, queued outputs without a message enqueued again;
- asks running jobs to make room for waiting jobs that outrank them (preemption, whose
  levels rise as they wait: shared.jobs.preemption);
- advances the running hyperparameter sweeps (worker.sweeper): reports trials
  evaluations to Optuna, promotes or prunes paused trials, starts new ones;
- cleans the artifact store: a recovered job's checkpoint objects that no row names (a
  killed trainer's upload that completed without its row), and, at most every
  SWEEP_SECONDS across all workers, what killed writers left (stale staged files,
  incomplete multipart uploads).

It runs as a thread in every worker (one pass at a time across all of them, through a
short Redis lock) or alone as `seqtrain reconcile`. Every action is a conditional UPDATE,
so two reconcilers, or a reconciler racing a worker, never double-run a job: an extra
message is harmless because only one claim can succeed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

import redis

from shared import jobs
from shared.infra.db import Database
from shared.infra.queue import (
    OUTPUT_TASK_ID_PREFIX,
    JobQueue,
    job_ids_with_messages,
    redis_client,
)
from shared.infra.storage import ArtifactStore, StoreError, open_store
from shared.jobs import outputs
from shared.jobs.preemption import preempt
from shared.protocol import RECONCILER_LOCK_KEY, JobStatus
from shared.settings import Settings
from worker.sweeper import run_sweeps

log = logging.getLogger(__name__)

LOCK_KEY = RECONCILER_LOCK_KEY
SWEEP_KEY = RECONCILER_LOCK_KEY + ":orphan-sweep"
# How often the store's orphans are swept (across all workers, through SWEEP_KEY).
SWEEP_SECONDS = 600.0
# A checkpoint object without a row is an orphan once this old: a live writer adds the row
# within moments of its upload completing.
ORPHAN_CHECKPOINT_SECONDS = 60.0
# The reconciler's store calls give up quickly: an unreachable store must not hold up the
# recovery of jobs, and what is not cleaned now is cleaned later.
STORE_RETRY_SECONDS = 5.0


def remove_orphan_checkpoints(
    db: Database,
    store: ArtifactStore,
    job_id: int,
    older_than: float = ORPHAN_CHECKPOINT_SECONDS,
    attempt: int | None = None,
) -> list[str]:
    """Delete the job's objects under `jobs/<id>/checkpoints/` that no checkpoint row names
    and that are over `older_than` seconds old (only `attempt`'s, when given: its keys end
    in `-a<attempt>.safetensors`); the keys deleted."""
    named = {ckpt.uri for ckpt in jobs.list_checkpoints(db, job_id)}
    cutoff = time.time() - older_than
    suffix = f"-a{attempt}.safetensors" if attempt is not None else ""
    removed = []
    for info in store.list(f"jobs/{job_id}/checkpoints/"):
        if info.key not in named and info.modified < cutoff and info.key.endswith(suffix):
            store.delete(info.key)
            removed.append(info.key)
    return removed


@dataclass
class Pass:
    """What one pass did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    enqueued: list[int] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # checkpoint objects without a row
    swept: int | None = None  # staged files and incomplete uploads removed, when swept
    # Job outputs: requeued or failed after their worker was lost, enqueued again.
    outputs_requeued: list[int] = field(default_factory=list)
    outputs_failed: list[int] = field(default_factory=list)
    outputs_enqueued: list[int] = field(default_factory=list)
    # Jobs of sweep trials the sweep controller created (worker.sweeper).
    trials_created: list[int] = field(default_factory=list)
    # (running job, waiting job): running jobs asked to make room (shared.jobs.preemption).
    preempted: list[tuple[int, int]] = field(default_factory=list)
    skipped: bool = False


class Reconciler:
    def __init__(self, db: Database, settings: Settings, actor: str = "reconciler") -> None:
        self.db, self.settings, self.actor = db, settings, actor
        self.redis = redis_client(settings.redis_url)
        self.queue = JobQueue(settings)
        retry = min(settings.store_retry_seconds, STORE_RETRY_SECONDS)
        self.store = open_store(replace(settings, store_retry_seconds=retry))
        self.last_sweep: float | None = None  # monotonic time of this process's last sweep
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
        expired_outputs = outputs.expired_output_leases(self.db)
        if now < self.leases_from:
            expired, expired_outputs = [], []
        for job_id, attempt in expired:
            self._recover(job_id, attempt, done)
        for output_id, attempt in expired_outputs:
            self._recover_output(output_id, attempt, done)
        self._enqueue_lost(done)
        self._enqueue_lost_outputs(done)
        done.trials_created = run_sweeps(self.db, self.settings, self.queue)
        done.preempted = preempt(self.db, self.settings)
        if done.preempted:
            log.info("reconciler: asked %s to make room (running, waiting)", done.preempted)
        self._sweep(done)
        if done.requeued or done.failed or done.enqueued or done.orphans or done.swept:
            log.info(
                "reconciler: requeued %s, failed %s, enqueued again %s, removed %d orphan "
                "checkpoints and %s incomplete uploads or staged files",
                done.requeued,
                done.failed,
                done.enqueued,
                len(done.orphans),
                done.swept or 0,
            )
        if done.outputs_requeued or done.outputs_failed or done.outputs_enqueued:
            log.info(
                "reconciler: outputs requeued %s, failed %s, enqueued again %s",
                done.outputs_requeued,
                done.outputs_failed,
                done.outputs_enqueued,
            )
        return done

    def _recover(self, job_id: int, attempt: int, done: Pass) -> None:
        """Take back a dead attempt's job; delete the checkpoint objects it uploaded without
        a row (before the job is enqueued, so no new attempt is writing yet)."""
        status = jobs.recover_expired(self.db, job_id, attempt, self.actor)
        if status is None:
            return
        try:
            orphans = remove_orphan_checkpoints(
                self.db, self.store, job_id, older_than=ORPHAN_CHECKPOINT_SECONDS
            )
            done.orphans.extend(orphans)
        except StoreError as exc:  # a stray object costs space only
            log.warning("reconciler: orphan clean-up of job %s failed: %s", job_id, exc)
        if status != JobStatus.QUEUED:
            done.failed.append(job_id)
            return
        done.requeued.append(job_id)
        try:
            self.queue.enqueue_job(job_id, jobs.get_job(self.db, job_id).queue)
        except Exception as exc:  # stays queued in SQL; a later pass enqueues it
            log.warning("reconciler: enqueue of job %s failed: %s", job_id, exc)

    def _recover_output(self, output_id: int, attempt: int, done: Pass) -> None:
        status = outputs.recover_expired_output(self.db, output_id, attempt)
        if status is None:
            return
        if status != JobStatus.QUEUED:
            done.outputs_failed.append(output_id)
            return
        done.outputs_requeued.append(output_id)
        try:
            queue = outputs.get_output(self.db, output_id).queue
            self.queue.enqueue_outputs([(output_id, queue)])
        except Exception as exc:  # stays queued in SQL; a later pass enqueues it
            log.warning("reconciler: enqueue of output %s failed: %s", output_id, exc)

    def _enqueue_lost_outputs(self, done: Pass) -> None:
        """Enqueue again the queued outputs that have no message on Redis."""
        grace = self.settings.enqueue_grace_seconds
        waiting = outputs.queued_outputs_awaiting_message(self.db, grace)
        if not waiting:
            return
        wanted: dict[str, set[int]] = {}
        for output_id, queue in waiting:
            wanted.setdefault(queue, set()).add(output_id)
        present = job_ids_with_messages(
            self.redis, wanted, unacked_max_age=grace, prefix=OUTPUT_TASK_ID_PREFIX
        )
        lost = [(output_id, queue) for output_id, queue in waiting if output_id not in present]
        if lost:
            self.queue.enqueue_outputs(lost)
            done.outputs_enqueued.extend(output_id for output_id, _ in lost)
            outputs.mark_outputs_enqueued(self.db, done.outputs_enqueued)

    def _enqueue_lost(self, done: Pass) -> None:
        """Enqueue again the queued jobs that have no message on Redis."""
        waiting = jobs.queued_awaiting_message(self.db, self.settings.enqueue_grace_seconds)
        if not waiting:
            return
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

    def _sweep_due(self) -> bool:
        """Whether to sweep now: SWEEP_SECONDS since this process's last sweep and, through a
        Redis key that lapses by itself, since any worker's (this process's alone without
        Redis)."""
        now = time.monotonic()
        if self.last_sweep is not None and now - self.last_sweep < SWEEP_SECONDS:
            return False
        try:
            claimed = self.redis.set(SWEEP_KEY, self.actor, nx=True, px=int(SWEEP_SECONDS * 1000))
        except redis.RedisError:
            claimed = True
        if claimed:
            self.last_sweep = now
        return bool(claimed)

    def _sweep(self, done: Pass) -> None:
        """Remove stale staged files and incomplete uploads, at most every SWEEP_SECONDS."""
        if not self._sweep_due():
            return
        try:
            done.swept = self.store.sweep_orphans()
        except StoreError as exc:
            log.warning("reconciler: orphan sweep failed: %s", exc)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.reconcile_seconds):
            try:
                self.run_once()
            except Exception as exc:  # a database or Redis outage: try again next time
                log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
