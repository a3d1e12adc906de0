"""Where a training run's results go: `Reporter` is what the loop calls (metric rows, a
checkpoint, a flush, whether to stop); `ServiceReporter` is the service's implementation:
metric rows batched into fenced SQL writes, fanned out on Redis pub/sub for live pages and
written to TensorBoard files; checkpoints to the artifact store and SQL, riding out a
database outage with retries."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

# Imported here, not per run: the fork-server preloads it for every trainer.
import redis
from sqlalchemy.exc import OperationalError

from shared import jobs
from shared.infra.db import Database
from shared.infra.storage import ArtifactStore, StoreError
from shared.protocol import metrics_channel
from shared.spec import JobSpec
from shared.zoo.checkpoints import save_checkpoint
from worker.tbevents import StoreEvents

T = TypeVar("T")
# Seconds the trainer keeps retrying a metrics or checkpoint write while the database is down.
DB_RETRY_SECONDS = 120.0


@dataclass
class Reporter:
    """Where the loop's results go. The service writes SQL; tests and local runs may collect.

    save(state, epoch, step, metrics, is_best)
    """

    log_metrics: Callable[[list[dict[str, Any]], int, int], None]
    save: Callable[..., None]
    flush: Callable[[], None] = lambda: None
    # True once the trainer should checkpoint and stop (the worker is draining).
    stop_requested: Callable[[], bool] = lambda: False
    # A sweep trial's decision point: evaluate, checkpoint and stop (Paused) at this step,
    # or at the end of this epoch; None: train to the end.
    pause_at_step: int | None = None
    pause_at_epoch: int | None = None
    # Told the optimizer steps the run plans, once it is set up (rank 0).
    planned: Callable[[int], None] = lambda total_steps: None
    # An evaluation's samples (split, epoch, step, items): seq2seq's sample translations.
    log_samples: Callable[[str, int, int, list[dict[str, Any]]], None] = lambda *a: None


def silent(report: Reporter) -> Reporter:
    """What ranks other than 0 report: nothing (rank 0 alone writes metrics and checkpoints)."""
    return Reporter(
        lambda *a: None,
        lambda *a, **k: None,
        stop_requested=report.stop_requested,
        pause_at_step=report.pause_at_step,
        pause_at_epoch=report.pause_at_epoch,
    )


class ServiceReporter:
    """Batches metric rows into fenced SQL writes and fans them out on Redis pub/sub."""

    FLUSH_SECONDS = 1.0

    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        job_id: int,
        attempt: int,
        spec: JobSpec,
        redis_url: str,
    ) -> None:
        self.db, self.store, self.job_id, self.attempt, self.spec = db, store, job_id, attempt, spec
        self.pending: list[dict[str, Any]] = []
        self.progress = (0, 0)
        self.last_flush = 0.0  # the first rows go out at once: a live page shows them soon
        self.redis = _redis_or_none(redis_url)
        self.events = (
            StoreEvents(store, f"jobs/{job_id}/tensorboard/attempt-{attempt}")
            if spec.training.tensorboard
            else None
        )

    def log_metrics(self, rows: list[dict[str, Any]], epoch: int, step: int) -> None:
        self.pending.extend(rows)
        self.progress = (epoch, step)
        if time.monotonic() - self.last_flush >= self.FLUSH_SECONDS:
            self.try_flush()

    def try_flush(self) -> None:
        """Flush, or keep the rows for the next flush while the database is down."""
        try:
            self.flush(wait=False)
        except OperationalError as exc:
            self.last_flush = time.monotonic()
            print(
                f"database unreachable; {len(self.pending)} metric rows kept for later "
                f"({type(exc.orig).__name__})",
                file=sys.stderr,
                flush=True,
            )

    def flush(self, wait: bool = True) -> None:
        """Write the pending rows; with `wait`, ride out a database outage of up to
        DB_RETRY_SECONDS (epoch ends, checkpoints and the end of training must not lose rows)."""
        if not self.pending:
            return
        epoch, step = self.progress
        rows = self.pending
        with_db_retries(
            lambda: jobs.write_metrics(
                self.db, self.job_id, self.attempt, rows, epoch=epoch, step=step
            ),
            seconds=DB_RETRY_SECONDS if wait else 0.0,
        )
        self.pending = []
        self.last_flush = time.monotonic()
        if self.events is not None:
            self.events.add_scalars(
                (f"{r['split']}/{r['name']}", r["step"], r["value"]) for r in rows
            )
            self.events.sync()
        if self.redis is not None:
            try:
                self.redis.publish(metrics_channel(self.job_id), json.dumps(rows))
            except Exception as exc:  # live pages are best-effort; SQL already has the rows
                print(f"metrics fan-out failed: {exc}", file=sys.stderr, flush=True)

    def planned(self, total_steps: int) -> None:
        """Record the steps the attempt plans on the job (progress, a sweep's epochs)."""

        def write() -> None:
            with jobs.fenced(self.db, self.job_id, self.attempt, total_steps=total_steps):
                pass

        with_db_retries(write, seconds=DB_RETRY_SECONDS)

    def log_samples(self, split: str, epoch: int, step: int, items: list[dict[str, Any]]) -> None:
        """Store an evaluation's samples (fenced, riding out a database outage)."""
        with_db_retries(
            lambda: jobs.write_samples(
                self.db, self.job_id, self.attempt, epoch=epoch, step=step, split=split, items=items
            ),
            seconds=DB_RETRY_SECONDS,
        )

    def close(self) -> None:
        """Close (and upload) the TensorBoard file and the Redis connection (every row is
        already written)."""
        if self.events is not None:
            self.events.close()
        if self.redis is not None:
            self.redis.close()

    def save(
        self, state: dict[str, Any], epoch: int, step: int, metrics: dict[str, float], is_best: bool
    ) -> None:
        """Write a checkpoint: the object is complete and its sha256 checked (`commit`) before
        its row exists. A store that stays down raises StoreError (the attempt exits to be
        retried); when the row cannot be written (fenced, or the database stays down) the
        object just uploaded is deleted again, so no object outlives a missing row. Keys name
        the attempt: a fenced attempt never overwrites, or deletes, the owner's checkpoint."""
        where = "end" if state["next_batch"] == 0 else f"b{state['next_batch']}"
        name = f"step-{step:09d}-{where}-a{self.attempt}.safetensors"
        key = f"jobs/{self.job_id}/checkpoints/{name}"
        staging = self.store.staging_path(key)
        try:
            save_checkpoint(staging, state)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        size, digest = self.store.commit(staging, key)
        try:
            dropped = with_db_retries(
                lambda: jobs.add_checkpoint(
                    self.db,
                    self.job_id,
                    self.attempt,
                    step=step,
                    epoch=epoch,
                    uri=key,
                    sha256=digest,
                    size=size,
                    metrics=metrics,
                    keep_last=self.spec.checkpoint.keep_last,
                    is_best=is_best,
                )
            )
        except BaseException:
            _delete_quietly(self.store, key, "checkpoint without a row")
            raise
        for old in set(dropped) - {key}:  # the same step saved twice keeps its object
            _delete_quietly(self.store, old, "dropped checkpoint")
        print(f"checkpoint {key} ({size:,} bytes)", flush=True)
        if self.events is not None:
            self.events.sync(force=True)


def _delete_quietly(store: ArtifactStore, key: str, what: str) -> None:
    """Delete an object no row names. A store that refuses leaves it behind (a warning, not
    a failed save): a stray object costs space, never correctness."""
    try:
        store.delete(key)
    except StoreError as exc:
        print(f"could not delete {what} {key}: {exc}", file=sys.stderr, flush=True)


def with_db_retries(write: Callable[[], T], seconds: float = DB_RETRY_SECONDS) -> T:
    """Run a database write, retrying with backoff for up to `seconds` while the database is
    unreachable (0: a single try)."""
    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return write()
        except OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            print(
                f"database unreachable ({type(exc.orig).__name__}); retrying in {delay:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _redis_or_none(url: str) -> Any:
    try:
        return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    except Exception:
        return None
