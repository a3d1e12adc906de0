"""The training loop, run as the supervisor's child process:

    python -m worker.trainer --job-id 12 --attempt 1

It reads the job's spec from SQL, trains, writes metrics (batched, fenced by the attempt)
and checkpoints (one safetensors file each) and exits 0 on success. Exit code 3 means this
attempt was fenced out (another attempt owns the job). Any other failure exits non-zero
with a traceback on stderr, which the supervisor stores as the job's error.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from shared import jobs
from shared.dataset_formats import DatasetFormatError
from shared.datasets import DatasetError
from shared.db import Database
from shared.settings import Settings
from shared.spec import JobSpec
from shared.statecodec import flatten, unflatten
from shared.storage import ArtifactStore
from shared.tokenization import tokenizer_from_dict
from shared.zoo import build_model
from worker import data as datalib

CHECKPOINT_FORMAT = "seqtrain.checkpoint/1"
EXIT_FENCED = 3


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message becomes the job's error."""


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tensors, document = flatten(state)
    save_file(tensors, str(path), metadata={"seqtrain": document})


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Everything in a checkpoint, from safetensors alone (no pickle)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if "seqtrain" not in metadata:
        raise ValueError(f"{path} is not a Seqtrain checkpoint")
    state: dict[str, Any] = unflatten(tensors, metadata["seqtrain"])
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
    return state


# ---------------------------------------------------------------- reporting


@dataclass
class Reporter:
    """Where the loop's results go. The service writes SQL; tests and local runs may collect."""

    log_metrics: Callable[[list[dict[str, Any]], int, int], None]
    save: Callable[[dict[str, Any], int, int, dict[str, float]], None]
    flush: Callable[[], None] = lambda: None


@dataclass
class TrainResult:
    step: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- the loop


def evaluate(model: nn.Module, split: datalib.Encoded, batch_size: int) -> dict[str, float]:
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for tokens, lengths, targets in datalib.iterate(split, batch_size, seed=None):
            logits, loss = model(tokens, lengths, targets)
            total_loss += float(loss) * len(targets)
            correct += int((logits.argmax(-1) == targets).sum())
    model.train()
    return {"loss": total_loss / len(split), "accuracy": correct / len(split)}


def lr_factor(step: int, total_steps: int) -> float:
    """Linear warmup over the first 5% of steps (at most 200), then cosine decay to 10%."""
    warmup = max(1, min(200, total_steps // 20))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(
    spec: JobSpec,
    report: Reporter,
    resume: dict[str, Any] | None = None,
    splits: datalib.Splits | None = None,
) -> TrainResult:
    """Train `spec` on `splits` (default: its built-in datasets), resuming from a checkpoint's state."""
    cfg = spec.training
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    if splits is None:
        splits = datalib.load_splits(spec.data, ArtifactStore("."))
    tokenizer = tokenizer_from_dict(resume["tokenizer"]) if resume else None
    labels = resume["labels"] if resume else None
    dataset = datalib.prepare_classification(spec.data, cfg.seed, splits, tokenizer, labels)
    model = build_model(
        spec.model, dataset.tokenizer.vocab_size, len(dataset.labels), spec.data.max_length
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(dataset.train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps))

    epoch, step = 0, 0
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"]["torch"])
        random.setstate(resume["rng"]["python"])
        epoch, step = resume["epoch"], resume["step"]
        print(f"resumed from epoch {epoch} step {step}", flush=True)

    print(
        f"training {spec.model.type}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{dataset.tokenizer.kind} tokenizer of {dataset.tokenizer.vocab_size:,} ids, {len(dataset.labels)} labels, "
        f"{len(dataset.train)} train / {len(dataset.val)} val examples",
        flush=True,
    )
    model.train()
    last: dict[str, float] = {}
    while epoch < cfg.epochs:
        epoch_loss, epoch_correct, epoch_seen, epoch_tokens = 0.0, 0, 0, 0
        started = time.perf_counter()
        for tokens, lengths, targets in datalib.iterate(
            dataset.train, cfg.batch_size, cfg.seed + epoch
        ):
            logits, loss = model(tokens, lengths, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = (
                float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                if cfg.grad_clip > 0
                else 0.0
            )
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(f"loss became {loss_value} at step {step}")
            epoch_loss += loss_value * len(targets)
            epoch_correct += int((logits.argmax(-1) == targets).sum())
            epoch_seen += len(targets)
            epoch_tokens += int(lengths.sum())
            if step % cfg.log_every_steps == 0:
                report.log_metrics(
                    [
                        _row(step, epoch, "train", "loss", loss_value),
                        _row(step, epoch, "train", "grad_norm", grad_norm),
                        _row(step, epoch, "train", "lr", scheduler.get_last_lr()[0]),
                    ],
                    epoch,
                    step,
                )
        epoch += 1
        seconds = time.perf_counter() - started
        val = evaluate(model, dataset.val, cfg.batch_size)
        last = {
            "train/loss": epoch_loss / epoch_seen,
            "train/accuracy": epoch_correct / epoch_seen,
            "train/samples_per_s": epoch_seen / seconds,
            "train/tokens_per_s": epoch_tokens / seconds,
            "val/loss": val["loss"],
            "val/accuracy": val["accuracy"],
        }
        report.log_metrics(
            [_row(step, epoch, *key.split("/"), value) for key, value in last.items()], epoch, step
        )
        report.flush()
        print(
            f"epoch {epoch}/{cfg.epochs} step {step}: train loss {last['train/loss']:.4f} "
            f"acc {last['train/accuracy']:.3f} | val loss {val['loss']:.4f} acc {val['accuracy']:.3f} "
            f"| {last['train/samples_per_s']:.0f} samples/s",
            flush=True,
        )
        if epoch % spec.checkpoint.every_epochs == 0 or epoch == cfg.epochs:
            state = {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
                "epoch": epoch,
                "step": step,
                "tokenizer": dataset.tokenizer.to_dict(),
                "labels": dataset.labels,
                "spec": spec.model_dump(mode="json"),
                "metrics": last,
            }
            report.save(state, epoch, step, last)
    if dataset.test is not None:
        test = evaluate(model, dataset.test, cfg.batch_size)
        last.update({"test/loss": test["loss"], "test/accuracy": test["accuracy"]})
        report.log_metrics([_row(step, epoch, "test", k, v) for k, v in test.items()], epoch, step)
        report.flush()
        print(f"test loss {test['loss']:.4f} acc {test['accuracy']:.3f}", flush=True)
    return TrainResult(step=step, epoch=epoch, metrics=last)


def _row(step: int, epoch: int, split: str, name: str, value: float) -> dict[str, Any]:
    return {"step": step, "epoch": epoch, "split": split, "name": name, "value": float(value)}


# ---------------------------------------------------------------- the service's reporter


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
        self.last_flush = time.monotonic()
        self.redis = _redis_or_none(redis_url)

    def log_metrics(self, rows: list[dict[str, Any]], epoch: int, step: int) -> None:
        self.pending.extend(rows)
        self.progress = (epoch, step)
        if time.monotonic() - self.last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        epoch, step = self.progress
        jobs.write_metrics(self.db, self.job_id, self.attempt, rows, epoch=epoch, step=step)
        self.last_flush = time.monotonic()
        if self.redis is not None:
            try:
                self.redis.publish(f"seqtrain:job:{self.job_id}:metrics", json.dumps(rows))
            except Exception as exc:  # live pages are best-effort; SQL already has the rows
                print(f"metrics fan-out failed: {exc}", file=sys.stderr, flush=True)

    def save(self, state: dict[str, Any], epoch: int, step: int, metrics: dict[str, float]) -> None:
        key = f"jobs/{self.job_id}/checkpoints/step-{step:09d}.safetensors"
        staging = self.store.staging_path(key)
        save_checkpoint(staging, state)
        size, digest = self.store.commit(staging, key)
        dropped = jobs.add_checkpoint(
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
        )
        for old in dropped:
            self.store.delete(old)
        print(f"checkpoint {key} ({size:,} bytes)", flush=True)


def _redis_or_none(url: str) -> Any:
    try:
        import redis

        return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    except Exception:
        return None


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the supervisor dies, so no trainer outlives its worker."""
    expected = os.environ.get("SEQTRAIN_SUPERVISOR_PID")
    if not sys.platform.startswith("linux") or not expected:
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(expected):  # the parent died before prctl took effect
        sys.exit(1)


def run_attempt(job_id: int, attempt: int, settings: Settings) -> int:
    db = Database(settings.database_url)
    store = ArtifactStore(settings.artifact_root)
    job = jobs.get_job(db, job_id)
    spec = JobSpec.model_validate(job.spec)
    splits = datalib.load_splits(spec.data, store, jobs.dataset_links(db, job_id))
    resume = None
    latest = jobs.latest_checkpoint(db, job_id)
    if latest is not None and store.exists(latest.uri):
        resume = load_checkpoint(store.path(latest.uri))
    reporter = ServiceReporter(db, store, job_id, attempt, spec, settings.redis_url)
    try:
        result = train(
            spec, Reporter(reporter.log_metrics, reporter.save, reporter.flush), resume, splits
        )
        reporter.flush()
    except jobs.Fenced as exc:
        print(f"stopping: {exc}", file=sys.stderr, flush=True)
        return EXIT_FENCED
    print(f"done: step {result.step}, {json.dumps(result.metrics)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.trainer")
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    threads = os.environ.get("SEQTRAIN_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return run_attempt(args.job_id, args.attempt, Settings.from_env())
    except (TrainingError, datalib.DataError, DatasetError, DatasetFormatError) as exc:
        # Expected failures: the message alone is the reason, no traceback.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
