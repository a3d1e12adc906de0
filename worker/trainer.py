"""The training loop, run as the supervisor's child process:

    python -m worker.trainer --job-id 12 --attempt 1

It reads the job's spec from SQL, trains, writes metrics (batched, fenced by the attempt)
and checkpoints (one safetensors file each). Its exit code tells the supervisor what to do:

    0   succeeded
    3   fenced out: another attempt owns the job; nothing more was written
    4   failed for a reason retrying cannot fix (bad data, NaN loss, out of memory);
        the last `error: ...` line on stderr is the reason
    5   drained: SIGUSR1 asked it to stop; it saved a checkpoint at the current step
    75  the database or artifact store failed: a new attempt resumes from the checkpoint
    1   crashed (a bug): the traceback's last lines become the job's error

A SIGTERM (cancel, timeout) stops it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from sqlalchemy.exc import OperationalError
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from shared import jobs
from shared.data.tokenization import tokenizer_from_dict
from shared.infra.db import Database
from shared.infra.storage import ArtifactStore
from shared.protocol import RANK_DIR_ENV, ExitCode, TrainerFailure, metrics_channel
from shared.settings import Settings
from shared.spec import JobSpec
from shared.zoo import build_model
from shared.zoo.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from shared.zoo.entity_metrics import entity_scores, token_accuracy
from worker import data as datalib
from worker.launch import die_with_parent
from worker.tbevents import EventWriter

T = TypeVar("T")

# Seconds the trainer keeps retrying a metrics or checkpoint write while the database is down.
DB_RETRY_SECONDS = 120.0


class TrainingError(TrainerFailure):
    """Training cannot go on (e.g. the loss became NaN); the message becomes the job's error."""


class Drained(Exception):
    """A stop was requested; a checkpoint at the current step has been saved."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step} after saving a checkpoint")
        self.step = step


# ---------------------------------------------------------------- reporting


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


@dataclass
class TrainResult:
    step: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


# ---------------------------------------------------------------- evaluation

# The validation metric that picks the best checkpoint and drives early stopping.
SELECTION = {
    "classification": ("accuracy", max),
    "tagging": ("f1", max),
    "language_modeling": ("loss", min),
}


def evaluate(
    task: str,
    model: nn.Module,
    examples: datalib.Examples,
    batch_size: int,
    labels: list[str],
    device: torch.device,
) -> dict[str, float]:
    """The task's metrics on `examples`. With several ranks each evaluates its share of the
    batches and the sums are reduced; tagging (entity F1 needs every path) runs whole on each."""
    model.eval()
    total_loss, weight, correct = 0.0, 0, 0
    gold: list[list[str]] = []
    predicted: list[list[str]] = []
    rank, world = rank_and_world() if task != "tagging" else (0, 1)
    with torch.no_grad():
        for batch in examples.batch_order(batch_size, seed=None)[rank::world]:
            tokens, lengths, targets = (t.to(device) for t in examples.collate(batch))
            logits, loss = model(tokens, lengths, targets)
            if task == "classification":
                n = len(targets)
                correct += int((logits.argmax(-1) == targets).sum())
            else:
                n = int((targets != datalib.IGNORE).sum())
            total_loss += float(loss) * n
            weight += n
            if task == "tagging":
                paths = model.predict(tokens, lengths)  # type: ignore[operator]
                for path, target in zip(paths, targets.tolist(), strict=True):
                    keep = [i for i, t in enumerate(target[: len(path)]) if t != datalib.IGNORE]
                    gold.append([labels[target[i]] for i in keep])
                    predicted.append([labels[path[i]] for i in keep])
    model.train()
    sums = (
        all_reduce_sums({"loss": total_loss, "weight": weight, "correct": correct}, device)
        if world > 1
        else {"loss": total_loss, "weight": weight, "correct": correct}
    )
    total_loss, weight, correct = sums["loss"], int(sums["weight"]), int(sums["correct"])
    result = {"loss": total_loss / max(weight, 1)}
    if task == "classification":
        result["accuracy"] = correct / max(weight, 1)
    elif task == "language_modeling":
        result["perplexity"] = math.exp(min(result["loss"], 50.0))
    else:
        scores = entity_scores(gold, predicted)
        result.update(
            f1=scores["f1"],
            precision=scores["precision"],
            recall=scores["recall"],
            accuracy=token_accuracy(gold, predicted),
        )
    return result


# ---------------------------------------------------------------- the loop


def lr_factor(step: int, total_steps: int, warmup: int, kind: str) -> float:
    """Linear warmup, then cosine or linear decay to 10% (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if kind == "linear":
        return 1.0 - 0.9 * progress
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def pick_device() -> torch.device:
    # Chosen in the trainer child only: the worker process never touches CUDA. Under
    # torchrun each rank takes the GPU of its LOCAL_RANK.
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def new_window() -> dict[str, float]:
    """Running sums of one log interval; `start` is when it began."""
    return {
        "loss": 0.0,
        "n": 0,
        "samples": 0,
        "tokens": 0,
        "slots": 0,
        "start": time.perf_counter(),
    }


def clip_in_step(
    optimizer: torch.optim.Optimizer, params: list[nn.Parameter], max_norm: float | None
) -> float:
    """The gradients' global L2 norm; clips them to `max_norm` inside the optimizer's step.

    The fused AdamW kernel divides each gradient by `optimizer.grad_scale` as it reads it
    (the hook GradScaler uses), so a scale of max(1, norm / max_norm) clips without the
    extra pass over every gradient that `clip_grad_norm_` makes: on CPUs, where a large
    embedding's gradient dominates a small model's step, that pass is a fifth of the step.
    The caller deletes `optimizer.grad_scale` after the step.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = nn.utils.get_total_norm(grads)
    if max_norm and optimizer.defaults.get("fused"):
        optimizer.grad_scale = torch.clamp(norm / max_norm, min=1.0)  # type: ignore[attr-defined]
    elif max_norm:
        nn.utils.clip_grads_with_norm_(grads, max_norm, norm)
    return float(norm)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless a process group is up (torchrun, or a test)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / MASTER_ADDR (NCCL on
    GPUs, gloo on CPUs); False for a single-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    device = pick_device()
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return True


def all_reduce_sums(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum each value over the ranks (a no-op for one process)."""
    if rank_and_world()[1] == 1:
        return values
    keys = sorted(values)
    # float64: counts and sums of tens of millions of tokens stay exact.
    summed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return dict(zip(keys, summed.tolist(), strict=True))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (a no-op for one process)."""
    if rank_and_world()[1] == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _silent(report: Reporter) -> Reporter:
    """What ranks other than 0 report: nothing (rank 0 alone writes metrics and checkpoints)."""
    return Reporter(lambda *a: None, lambda *a, **k: None, stop_requested=report.stop_requested)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    return (
        torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else torch.float16
    )


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            saved["keys"].numpy().astype(np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    spec: JobSpec,
    report: Reporter,
    resume: dict[str, Any] | None = None,
    splits: datalib.Splits | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """Train `spec` on `splits` (default: its built-in datasets), resuming from a checkpoint's state."""
    cfg, task = spec.training, spec.task
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    device = device or pick_device()
    amp = autocast_dtype(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 matmuls autocast leaves
        torch.backends.cudnn.allow_tf32 = True
    # Each rank takes `batch_size` examples of every global batch of batch_size * world.
    rank, world = rank_and_world()
    global_batch = cfg.batch_size * world
    if rank != 0:
        report = _silent(report)

    splits = splits or datalib.load_splits(spec, None)
    tokenizer = tokenizer_from_dict(resume["tokenizer"]) if resume else None
    data = datalib.prepare(
        task, spec.data, cfg.seed, splits, tokenizer, resume["labels"] if resume else None
    )
    model = build_model(
        spec.model, task, data.tokenizer.vocab_size, max(len(data.labels), 2), spec.data.max_length
    ).to(device)
    # Every rank built the same weights from the same seed (DDP also broadcasts rank 0's);
    # from here each rank draws its own dropout masks.
    if rank != 0:
        torch.manual_seed(cfg.seed + 1_000_003 * rank)
    # `ddp` runs the training forward (gradients averaged over the ranks on backward);
    # `model` is the same module, for evaluation and state dicts.
    ddp: nn.Module = DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model
    # The fused kernel updates every parameter in one pass: several times faster than the
    # per-tensor loop on CPUs, where the optimizer step is a large share of a small model's step.
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    steps_per_epoch = len(data.train.batch_order(global_batch, cfg.seed))
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = (
        cfg.warmup_steps if cfg.warmup_steps is not None else max(1, min(200, total_steps // 20))
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.scheduler)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    metric_name, better = SELECTION[task]

    epoch, next_batch, step, best, stale = 0, 0, 0, None, 0
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        set_rng_state(resume["rng"])
        epoch, next_batch, step = resume["epoch"], resume["next_batch"], resume["step"]
        best, stale = resume["best"], resume["stale"]
        saved_batch = int(resume.get("global_batch", cfg.batch_size))
        if rank != 0:  # rank 0's RNG state was restored on every rank: draw apart again
            torch.manual_seed(cfg.seed + 1_000_003 * rank + step)
        print(f"resumed at epoch {epoch} batch {next_batch} (step {step})", flush=True)

    def state(next_batch_: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "task": task,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "epoch": epoch,
            "next_batch": next_batch_,
            "step": step,
            "global_batch": global_batch,
            "world_size": world,
            "best": best,
            "stale": stale,
            "tokenizer": data.tokenizer.to_dict(),
            "labels": data.labels,
            "spec": spec.model_dump(mode="json"),
            "metrics": metrics,
        }

    print(
        f"training {spec.model.type} for {task}: {sum(p.numel() for p in model.parameters()):,} "
        f"parameters on {device}{f' (world size {world})' if world > 1 else ''}, "
        f"{data.tokenizer.kind} tokenizer of {data.tokenizer.vocab_size:,} ids, "
        f"{len(data.labels)} labels, {len(data.train)} train / {len(data.val)} val examples",
        flush=True,
    )
    model.train()
    last: dict[str, float] = {}
    stopped_early = False
    while epoch < cfg.epochs and step < total_steps and not stopped_early:
        order = data.train.batch_order(global_batch, cfg.seed + epoch)
        if resume and next_batch and saved_batch != global_batch:
            # Saved by a run with another number of devices: re-cut the rest of its epoch.
            saved_order = data.train.batch_order(saved_batch, cfg.seed + epoch)
            order, next_batch = datalib.rebatch(saved_order[next_batch:], global_batch), 0
        totals = {"loss": 0.0, "weight": 0, "correct": 0, "samples": 0, "tokens": 0, "slots": 0}
        window = new_window()
        started = time.perf_counter()
        for index in range(next_batch, len(order)):
            batch = order[index]
            # A rank past the end of a short last batch trains on a stand-in weighed zero.
            stand_in = world > 1 and rank >= len(batch)
            tokens, lengths, targets = to_device(
                data.train.collate(datalib.shard(batch, rank, world) if world > 1 else batch),
                device,
            )
            n = len(targets) if task == "classification" else int((targets != datalib.IGNORE).sum())
            n = 0 if stand_in else n
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits, loss = ddp(tokens, lengths, targets)
            objective = loss
            if world > 1:
                # DDP averages the ranks' gradients. Weighing each rank's mean loss by its share
                # of the global batch's targets makes that average the gradient of the global
                # batch's mean loss: the same step as one process with the whole batch.
                targets_in_batch = all_reduce_sums({"n": n}, device)["n"]
                objective = loss * (n * world / max(targets_in_batch, 1.0))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(objective).backward()
            scaler.unscale_(optimizer)
            grad_norm = clip_in_step(optimizer, params, cfg.grad_clip)
            scaler.step(optimizer)
            with contextlib.suppress(AttributeError):
                del optimizer.grad_scale  # type: ignore[attr-defined]  # set by clip_in_step
            scaler.update()
            scheduler.step()
            step += 1
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(f"loss became {loss_value} at step {step}")
            real, slots = (0, 0) if stand_in else (int(lengths.sum()), tokens.numel())
            for bucket in (totals, window):
                bucket["loss"] += loss_value * n
                bucket["samples"] += 0 if stand_in else len(lengths)
                bucket["tokens"] += real
                bucket["slots"] += slots
            totals["weight"] += n
            window["n"] += n
            if task == "classification" and not stand_in:
                totals["correct"] += int((logits.argmax(-1) == targets).sum())
            if step % cfg.log_every_steps == 0:
                seconds = time.perf_counter() - window["start"]
                seen = all_reduce_sums(
                    {k: window[k] for k in ("loss", "n", "samples", "tokens", "slots")}, device
                )
                values = {
                    "loss": seen["loss"] / max(seen["n"], 1),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    "tokens_per_s": seen["tokens"] / seconds,
                    "samples_per_s": seen["samples"] / seconds,
                    "padding_ratio": 1 - seen["tokens"] / max(seen["slots"], 1),
                }
                report.log_metrics(
                    [_row(step, epoch, "train", k, v) for k, v in values.items()], epoch, step
                )
                window = new_window()
            saved = bool(spec.checkpoint.every_steps) and step % spec.checkpoint.every_steps == 0
            if saved:
                report.save(state(index + 1, last), epoch, step, last, False)
            if any_rank(report.stop_requested(), device):  # every rank stops at the same step
                if not saved:
                    report.save(state(index + 1, last), epoch, step, last, False)
                report.flush()
                raise Drained(step)
            if step >= total_steps:
                break
        seconds = time.perf_counter() - started
        epoch += 1
        next_batch = 0
        totals.update(all_reduce_sums(totals, device))
        val = evaluate(task, model, data.val, cfg.batch_size, data.labels, device)
        last = {
            "train/loss": totals["loss"] / max(totals["weight"], 1),
            "train/samples_per_s": totals["samples"] / seconds,
            "train/tokens_per_s": totals["tokens"] / seconds,
        }
        if task == "classification":
            last["train/accuracy"] = totals["correct"] / max(totals["weight"], 1)
        last.update({f"val/{k}": v for k, v in val.items()})
        report.log_metrics(
            [_row(step, epoch, *key.split("/"), value) for key, value in last.items()], epoch, step
        )
        report.flush()
        is_best = best is None or better(val[metric_name], best) != best
        if is_best:
            best, stale = val[metric_name], 0
        else:
            stale += 1
        print(
            f"epoch {epoch}/{cfg.epochs} step {step}: train loss {last['train/loss']:.4f} | "
            + " ".join(f"val {k} {v:.4f}" for k, v in val.items())
            + f" | {last['train/samples_per_s']:.0f} samples/s",
            flush=True,
        )
        stopped_early = (
            cfg.early_stopping_patience is not None and stale >= cfg.early_stopping_patience
        )
        final = epoch == cfg.epochs or step >= total_steps or stopped_early
        if is_best or final or epoch % spec.checkpoint.every_epochs == 0:
            report.save(state(0, last), epoch, step, last, is_best)
        if stopped_early:
            print(
                f"early stop: val {metric_name} did not improve for {stale} evaluations", flush=True
            )
    if data.test is not None:
        test = evaluate(task, model, data.test, cfg.batch_size, data.labels, device)
        last.update({f"test/{k}": v for k, v in test.items()})
        report.log_metrics([_row(step, epoch, "test", k, v) for k, v in test.items()], epoch, step)
        report.flush()
        print("test " + " ".join(f"{k} {v:.4f}" for k, v in test.items()), flush=True)
    return TrainResult(step=step, epoch=epoch, metrics=last, stopped_early=stopped_early)


def to_device(batch: datalib.Batch, device: torch.device) -> datalib.Batch:
    """Copy a CPU batch to the device; to a GPU from pinned memory, without blocking the host."""
    if device.type != "cuda":
        return batch
    tokens, lengths, targets = (t.pin_memory().to(device, non_blocking=True) for t in batch)
    return tokens, lengths, targets


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
        self.last_flush = 0.0  # the first rows go out at once: a live page shows them soon
        self.redis = _redis_or_none(redis_url)
        self.events = (
            EventWriter(store.path(f"jobs/{job_id}/tensorboard/attempt-{attempt}"))
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
        if self.redis is not None:
            try:
                self.redis.publish(metrics_channel(self.job_id), json.dumps(rows))
            except Exception as exc:  # live pages are best-effort; SQL already has the rows
                print(f"metrics fan-out failed: {exc}", file=sys.stderr, flush=True)

    def save(
        self, state: dict[str, Any], epoch: int, step: int, metrics: dict[str, float], is_best: bool
    ) -> None:
        where = "end" if state["next_batch"] == 0 else f"b{state['next_batch']}"
        key = f"jobs/{self.job_id}/checkpoints/step-{step:09d}-{where}.safetensors"
        staging = self.store.staging_path(key)
        save_checkpoint(staging, state)
        size, digest = self.store.commit(staging, key)
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
        for old in dropped:
            self.store.delete(old)
        print(f"checkpoint {key} ({size:,} bytes)", flush=True)


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
        import redis

        return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    except Exception:
        return None


def run_attempt(job_id: int, attempt: int, settings: Settings) -> int:
    db = Database(settings.database_url)
    store = ArtifactStore(settings.artifact_root)
    job = jobs.get_job(db, job_id)
    spec = JobSpec.model_validate(job.spec)
    splits = datalib.load_splits(spec, store, jobs.dataset_links(db, job_id))
    resume = None
    latest = jobs.latest_checkpoint(db, job_id)
    if latest is not None and store.exists(latest.uri):
        resume = load_checkpoint(store.path(latest.uri))
        if rank_and_world()[0] == 0:
            jobs.note_attempt(
                db,
                job_id,
                attempt,
                f"resuming from checkpoint at step {latest.step} (epoch {latest.epoch})",
            )
    reporter = ServiceReporter(db, store, job_id, attempt, spec, settings.redis_url)
    report = Reporter(
        reporter.log_metrics, reporter.save, reporter.flush, stop_requested=_STOP.is_set
    )
    try:
        result = train(spec, report, resume, splits)
        reporter.flush()
    except jobs.Fenced as exc:
        print(f"stopping: {exc}", file=sys.stderr, flush=True)
        return ExitCode.FENCED
    except Drained as exc:
        print(f"drained: {exc}", flush=True)
        return ExitCode.DRAINED
    print(f"done: step {result.step}, {json.dumps(result.metrics)}", flush=True)
    return 0


# Set by SIGUSR1: the worker is draining; checkpoint at the next step and exit.
_STOP = threading.Event()


def _on_stop_signal(signum: int, frame: Any) -> None:
    _STOP.set()


# Under worker.launch each rank leaves its pid and exit code in RANK_DIR_ENV's folder (the
# launcher forwards SIGUSR1 to rank 0 and exits with the code of the rank that failed first).


def _rank_file(suffix: str) -> str | None:
    folder = os.environ.get(RANK_DIR_ENV)
    return os.path.join(folder, f"rank-{os.environ.get('RANK', '0')}.{suffix}") if folder else None


def _write_rank_file(suffix: str, value: int) -> None:
    path = _rank_file(suffix)
    if path is not None:
        with open(path, "w") as handle:
            handle.write(str(value))


@record  # under torchrun: a failing rank's traceback reaches the launcher's log
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.trainer")
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    args = parser.parse_args(argv)
    # A DDP rank's parent is torchrun's agent (worker.launch), which dies with the supervisor.
    die_with_parent(check_parent="TORCHELASTIC_RUN_ID" not in os.environ)
    signal.signal(signal.SIGUSR1, _on_stop_signal)
    _write_rank_file("pid", os.getpid())
    threads = os.environ.get("SEQTRAIN_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        init_distributed()
        return run_attempt(args.job_id, args.attempt, Settings.from_env())
    except TrainerFailure as exc:
        # Expected failures: the message alone is the reason, no traceback.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.FAILED
    except (torch.OutOfMemoryError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"error: out of memory ({first}); lower training.batch_size or data.max_length, "
            "or use a smaller model",
            file=sys.stderr,
            flush=True,
        )
        return ExitCode.FAILED
    except OperationalError as exc:
        print(f"error: database unreachable: {exc.orig}", file=sys.stderr, flush=True)
        return ExitCode.RETRY


if __name__ == "__main__":
    code = main() or 0
    _write_rank_file("exit", code)
    if dist.is_initialized() and code == 0:
        # Tear the group down together: a rank that leaves while a peer is still tearing
        # down can abort that peer's gloo threads at exit.
        dist.barrier()
        dist.destroy_process_group()
    sys.exit(code)
