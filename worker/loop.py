"""The training loop, one for every task and model: `train(spec, report)` sets a run up once
(device, process group share, data, model, optimizer, schedule, resumed state), then trains
epoch by epoch, evaluates, keeps the best checkpoint and stops early. What differs between
tasks (targets, metrics) is asked of the task's plug-in (`shared.zoo.task.Task`); rank 0
alone reports.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from shared.data import examples as datalib
from shared.data.tokenization import Tokenizer, tokenizer_from_dict
from shared.protocol import TrainerFailure
from shared.registry import TaskInfo, task_info
from shared.spec import JobSpec
from shared.zoo.checkpoints import CHECKPOINT_FORMAT, load_model_state, model_state
from shared.zoo.task import Task
from worker.distributed import (
    all_reduce_sums,
    any_rank,
    autocast_dtype,
    pick_device,
    rank_and_world,
    to_device,
)
from worker.intervals import log_interval, metric_row, new_window
from worker.optim import optimization, optimizer_step
from worker.pausing import Paused, pause_due
from worker.reporting import Reporter, silent
from worker.state import TrainState, seed_everything


class TrainingError(TrainerFailure):
    """Training cannot go on (e.g. the loss became NaN); the message becomes the job's error."""


class Drained(Exception):
    """A stop was requested; a checkpoint at the current step has been saved."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step} after saving a checkpoint")
        self.step = step


@dataclass
class TrainResult:
    step: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    run: Run | None = field(default=None, repr=False, compare=False)  # for the report


@dataclass
class Run:
    """Everything a run holds once it is set up; `state` is what changes as it trains."""

    spec: JobSpec
    task: Task
    data: datalib.Prepared
    model: nn.Module  # the module itself, for evaluation and state dicts
    ddp: nn.Module  # the same module wrapped for the training forward when world > 1
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None
    device: torch.device
    rank: int
    world: int
    total_steps: int
    report: Reporter
    state: TrainState
    # The base model's unpacked directory (named by its archive's sha256), for type pretrained.
    backbone: Path | None = None
    # Seconds the set-up took, by part (printed at the start).
    setup_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def info(self) -> TaskInfo:
        return self.task.info

    def checkpoint(self, next_batch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """What a checkpoint holds: state dicts, the loop's state, tokenizer, labels, spec."""
        return {
            "format": CHECKPOINT_FORMAT,
            "task": self.task.name,
            # Without frozen base weights: the base model is named by its hash below.
            "model": model_state(self.model),
            "base_model": self.backbone.name if self.backbone else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.state.state_dict(),
            "next_batch": next_batch,
            "tokenizer": self.data.tokenizer.to_dict(),
            "labels": self.data.labels,
            "spec": self.spec.model_dump(mode="json"),
            "metrics": metrics,
        }


def train(
    spec: JobSpec,
    report: Reporter,
    resume: dict[str, Any] | None = None,
    splits: datalib.Splits | None = None,
    device: torch.device | None = None,
    backbone: Path | None = None,
) -> TrainResult:
    """Train `spec` on `splits` (default: its built-in datasets), resuming from a checkpoint's
    state; `backbone` is the base model's directory for a pretrained model."""
    run = setup(spec, report, resume, splits, device, backbone)
    cfg, state = spec.training, run.state
    announce(run)
    run.model.train()
    last: dict[str, float] = {}
    stopped_early = False
    while state.epoch < cfg.epochs and state.step < run.total_steps and not stopped_early:
        totals, seconds = train_epoch(run, epoch_order(run), last)
        state.epoch, state.next_batch = state.epoch + 1, 0
        last = end_of_epoch(run, totals, seconds)
        stopped_early = keep_best(run, last)
        if not stopped_early and pause_due(run):
            raise Paused(state.step, state.epoch, last)  # keep_best saved this epoch's end
    if run.data.test is not None:
        test = evaluate(run, run.data.test, "test")
        last.update({f"test/{k}": v for k, v in test.items()})
        run.report.log_metrics(
            [metric_row(state.step, state.epoch, "test", k, v) for k, v in test.items()],
            state.epoch,
            state.step,
        )
        run.report.flush()
        print("test " + " ".join(f"{k} {v:.4f}" for k, v in test.items()), flush=True)
    return TrainResult(state.step, state.epoch, last, stopped_early, run)


# ---------------------------------------------------------------- setting a run up


def setup(
    spec: JobSpec,
    report: Reporter,
    resume: dict[str, Any] | None,
    splits: datalib.Splits | None,
    device: torch.device | None,
    backbone: Path | None = None,
) -> Run:
    """Build the run: the order of every seeded step here is part of exact resume."""
    cfg = spec.training
    seed_everything(spec)
    device = device or pick_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 matmuls autocast leaves
        torch.backends.cudnn.allow_tf32 = True
    # Each rank takes `batch_size` examples of every global batch of batch_size * world.
    rank, world = rank_and_world()
    state = TrainState(global_batch=cfg.batch_size * world, world_size=world)
    task = task_info(spec.task).plugin()
    started = time.perf_counter()
    data = task.prepare(
        spec.data,
        cfg.seed,
        splits or datalib.load_splits(spec, None),
        initial_tokenizer(resume, backbone),
        resume["labels"] if resume else None,
    )
    encoded = time.perf_counter()
    vocab_size, num_labels = task.model_sizes(data.tokenizer, data.labels)
    model = task.build_for(spec, vocab_size, num_labels, backbone).to(device)
    built = time.perf_counter()
    # Every rank built the same weights from the same seed (DDP also broadcasts rank 0's);
    # from here each rank draws its own dropout masks.
    if rank != 0:
        torch.manual_seed(cfg.seed + 1_000_003 * rank)
    ddp = DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model
    total_steps = len(data.train.batch_order(state.global_batch, cfg.seed)) * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer, scheduler = optimization(spec, model, total_steps)
    amp = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    run = Run(
        spec, task, data, model, ddp, optimizer, scheduler, scaler, amp, device, rank, world,
        total_steps, report if rank == 0 else silent(report), state, backbone,
        {"data": encoded - started, "model": built - encoded},
    )  # fmt: skip
    if resume:
        restore(run, resume)
    return run


def initial_tokenizer(resume: dict[str, Any] | None, backbone: Path | None) -> Tokenizer | None:
    """A checkpoint's tokenizer, else the base model's own; None: the task trains one."""
    if resume:
        return tokenizer_from_dict(resume["tokenizer"])
    if backbone is not None:
        from shared.zoo.pretrained import pretrained_tokenizer

        return pretrained_tokenizer(backbone)
    return None


def restore(run: Run, resume: dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimizer, schedule, position, RNG states."""
    base = resume.get("base_model")
    if base != (run.backbone.name if run.backbone else None):
        raise TrainingError(
            f"the checkpoint was trained from base model {base}, not {run.backbone and run.backbone.name}"
        )
    load_model_state(run.model, resume["model"])
    run.optimizer.load_state_dict(resume["optimizer"])
    run.scheduler.load_state_dict(resume["scheduler"])
    state = run.state
    state.load_state_dict(resume)
    if run.rank != 0:  # rank 0's RNG state was restored on every rank: draw apart again
        torch.manual_seed(run.spec.training.seed + 1_000_003 * run.rank + state.step)
    print(
        f"resumed at epoch {state.epoch} batch {state.next_batch} (step {state.step})", flush=True
    )


def announce(run: Run) -> None:
    run.report.planned(run.total_steps)
    spec, data, params = run.spec, run.data, list(run.model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    print(
        f"training {spec.model.type} for {spec.task}: "
        f"{sum(p.numel() for p in params):,} parameters ({trainable:,} trained) on {run.device}"
        f"{f' (world size {run.world})' if run.world > 1 else ''}, "
        f"{data.tokenizer.kind} tokenizer of {data.tokenizer.vocab_size:,} ids, "
        f"{len(data.labels)} labels, {len(data.train)} train / {len(data.val)} val examples; "
        "set up in "
        + ", ".join(f"{part} {seconds:.2f} s" for part, seconds in run.setup_seconds.items()),
        flush=True,
    )


# ---------------------------------------------------------------- one epoch


def epoch_order(run: Run) -> list[list[int]]:
    """This epoch's global batches: a pure function of (seed, epoch), so a checkpoint's batch
    index is enough to resume; a position saved with another global batch is re-cut."""
    state, seed = run.state, run.spec.training.seed + run.state.epoch
    if state.recut():
        assert state.saved_batch is not None
        saved_order = run.data.train.batch_order(state.saved_batch, seed)
        order = datalib.rebatch(saved_order[state.next_batch :], state.global_batch)
        state.next_batch = 0
        return order
    return run.data.train.batch_order(state.global_batch, seed)


def train_epoch(
    run: Run, order: list[list[int]], last: dict[str, float]
) -> tuple[dict[str, float], float]:
    """Train the epoch's batches from `state.next_batch` on; returns its sums and seconds.
    Logs every `log_every_steps`, checkpoints every `every_steps` and on a stop request."""
    cfg, state, report = run.spec.training, run.state, run.report
    every_steps = run.spec.checkpoint.every_steps
    totals = {"loss": 0.0, "weight": 0, "samples": 0, "tokens": 0, "slots": 0}
    totals.update(dict.fromkeys(run.task.train_count_keys, 0))
    window, started = new_window(), time.perf_counter()
    for index in range(state.next_batch, len(order)):
        grad_norm = train_step(run, order[index], totals, window)
        if state.step % cfg.log_every_steps == 0:
            log_interval(run, window, grad_norm)
            window = new_window()
        saved = bool(every_steps) and state.step % every_steps == 0
        if saved:
            report.save(run.checkpoint(index + 1, last), state.epoch, state.step, last, False)
        if any_rank(report.stop_requested(), run.device):  # every rank stops at the same step
            if not saved:
                report.save(run.checkpoint(index + 1, last), state.epoch, state.step, last, False)
            report.flush()
            raise Drained(state.step)
        if state.step >= run.total_steps:
            break
        if index + 1 < len(order) and pause_due(run, mid_epoch=True):
            pause_mid_epoch(run, index + 1, last)
    return totals, time.perf_counter() - started


def pause_mid_epoch(run: Run, next_batch: int, last: dict[str, float]) -> None:
    """Evaluate on the validation split, write those metrics, checkpoint at this step and
    raise Paused. The evaluation draws no random numbers and leaves the selection state
    alone, so a resumed trial trains on exactly as one never paused."""
    state = run.state
    val = {f"val/{k}": v for k, v in evaluate(run, run.data.val).items()}
    rows = [metric_row(state.step, state.epoch, *k.split("/"), v) for k, v in val.items()]
    run.report.log_metrics(rows, state.epoch, state.step)
    run.report.save(
        run.checkpoint(next_batch, last), state.epoch, state.step, {**last, **val}, False
    )
    run.report.flush()
    raise Paused(state.step, state.epoch, val)


def train_step(
    run: Run, batch: list[int], totals: dict[str, float], window: dict[str, float]
) -> float:
    """One optimizer step on one global batch (this rank's share of it); returns the
    gradients' norm and adds the step's counts to `totals` and `window`."""
    rank, world, device = run.rank, run.world, run.device
    # A rank past the end of a short last batch trains on a stand-in weighed zero.
    stand_in = world > 1 and rank >= len(batch)
    tokens, lengths, targets = to_device(
        run.data.train.collate(datalib.shard(batch, rank, world) if world > 1 else batch), device
    )
    n = 0 if stand_in else run.task.count_targets(targets)
    with torch.autocast(device.type, dtype=run.amp or torch.float32, enabled=run.amp is not None):
        logits, loss = run.ddp(tokens, lengths, targets)
    objective = loss
    if world > 1:
        # DDP averages the ranks' gradients. Weighing each rank's mean loss by its share
        # of the global batch's targets makes that average the gradient of the global
        # batch's mean loss: the same step as one process with the whole batch.
        targets_in_batch = all_reduce_sums({"n": n}, device)["n"]
        objective = loss * (n * world / max(targets_in_batch, 1.0))
    grad_norm = optimizer_step(objective, run.optimizer, run.scaler, run.spec.training.grad_clip)
    run.scheduler.step()
    run.state.step += 1
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise TrainingError(f"loss became {loss_value} at step {run.state.step}")
    real, slots = (0, 0) if stand_in else (int(lengths.sum()), tokens.numel())
    for bucket in (totals, window):
        bucket["loss"] += loss_value * n
        bucket["samples"] += 0 if stand_in else len(lengths)
        bucket["tokens"] += real
        bucket["slots"] += slots
    totals["weight"] += n
    window["n"] += n
    if not stand_in:
        for key, count in run.task.train_counts(logits, targets).items():
            totals[key] += count
    return grad_norm


# ---------------------------------------------------------------- evaluation and selection


def evaluate(run: Run, examples: datalib.Examples, split: str = "validation") -> dict[str, float]:
    """The task's metrics on `examples`. With several ranks each evaluates its share of the
    batches and the sums are reduced, unless the task's metrics need the whole set on each.
    The evaluation's samples (a few translations, say) are reported beside its metrics."""
    model, device, task = run.model, run.device, run.task
    model.eval()
    rank, world = (run.rank, run.world) if task.shard_evaluation else (0, 1)
    evaluation = task.evaluation_for(run.spec, run.data, examples)
    total_loss, weight = 0.0, 0
    with torch.no_grad():
        for batch in examples.batch_order(run.spec.training.batch_size, seed=None)[rank::world]:
            tokens, lengths, targets = (t.to(device) for t in examples.collate(batch))
            logits, loss = model(tokens, lengths, targets)
            n = task.count_targets(targets)
            total_loss += float(loss) * n
            weight += n
            evaluation.add(model, tokens, lengths, targets, logits, batch)
    model.train()
    sums = {"loss": total_loss, "weight": weight, **evaluation.sums()}
    if world > 1:
        sums = all_reduce_sums(sums, device)
    result = {"loss": sums["loss"] / max(int(sums["weight"]), 1)}
    result.update(evaluation.finish(result["loss"], sums))
    samples = evaluation.samples()
    if samples:
        run.report.log_samples(split, run.state.epoch, run.state.step, samples)
    return result


def end_of_epoch(run: Run, totals: dict[str, float], seconds: float) -> dict[str, float]:
    """The epoch's train sums (over every rank) and a validation pass, written and printed."""
    state, cfg = run.state, run.spec.training
    totals.update(all_reduce_sums(totals, run.device))
    val = evaluate(run, run.data.val)
    last = {
        "train/loss": totals["loss"] / max(totals["weight"], 1),
        "train/samples_per_s": totals["samples"] / seconds,
        "train/tokens_per_s": totals["tokens"] / seconds,
    }
    last.update(run.task.train_metrics(totals))
    last.update({f"val/{k}": v for k, v in val.items()})
    rows = [
        metric_row(state.step, state.epoch, *key.split("/"), value) for key, value in last.items()
    ]
    run.report.log_metrics(rows, state.epoch, state.step)
    run.report.flush()
    print(
        f"epoch {state.epoch}/{cfg.epochs} step {state.step}: train loss {last['train/loss']:.4f} | "
        + " ".join(f"val {k} {v:.4f}" for k, v in val.items())
        + f" | {last['train/samples_per_s']:.0f} samples/s",
        flush=True,
    )
    return last


def keep_best(run: Run, last: dict[str, float]) -> bool:
    """Track the selection metric, checkpoint the best (and every `every_epochs`, and the
    last) epoch; returns whether early stopping ends the run."""
    state, cfg, info = run.state, run.spec.training, run.info
    value = last[f"val/{info.selection_metric}"]
    is_best = info.better(value, state.best)
    if is_best:
        state.best, state.stale = value, 0
    else:
        state.stale += 1
    patience = cfg.early_stopping_patience
    stopped_early = patience is not None and state.stale >= patience
    final = state.epoch == cfg.epochs or state.step >= run.total_steps or stopped_early
    every = state.epoch % run.spec.checkpoint.every_epochs == 0 or pause_due(run)
    if is_best or final or every:
        run.report.save(run.checkpoint(0, last), state.epoch, state.step, last, is_best)
    if stopped_early:
        print(
            f"early stop: val {info.selection_metric} did not improve for {state.stale} evaluations",
            flush=True,
        )
    return stopped_early
