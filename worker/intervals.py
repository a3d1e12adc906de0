"""One log interval of training: its running sums, and the train metrics written at its
end (loss, learning rate, gradient norm, speed, padding); and the shape of a metric row."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from worker.distributed import all_reduce_sums

if TYPE_CHECKING:
    from worker.loop import Run


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


def log_interval(run: Run, window: dict[str, float], grad_norm: float) -> None:
    """The interval's train metrics: loss, learning rate, gradient norm, speed, padding."""
    seconds = time.perf_counter() - window["start"]
    seen = all_reduce_sums(
        {k: window[k] for k in ("loss", "n", "samples", "tokens", "slots")}, run.device
    )
    loss = seen["loss"] / max(seen["n"], 1)
    values = {
        "loss": loss,
        **run.task.interval_metrics(run.spec, loss),
        "lr": run.scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
        "tokens_per_s": seen["tokens"] / seconds,
        "samples_per_s": seen["samples"] / seconds,
        "padding_ratio": 1 - seen["tokens"] / max(seen["slots"], 1),
    }
    step, epoch = run.state.step, run.state.epoch
    run.report.log_metrics(
        [metric_row(step, epoch, "train", k, v) for k, v in values.items()], epoch, step
    )


def metric_row(step: int, epoch: int, split: str, name: str, value: float) -> dict[str, Any]:
    return {"step": step, "epoch": epoch, "split": split, "name": name, "value": float(value)}
