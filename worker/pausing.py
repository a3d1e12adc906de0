"""A sweep trial's decision points in the loop: whether the run stands at one
(`Reporter.pause_at_step` / `pause_at_epoch`), and the exception that ends it there (the
trainer exits with ExitCode.PAUSED; the loop's `pause_mid_epoch` evaluates and checkpoints
first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.loop import Run


class Paused(Exception):
    """A sweep trial reached its decision point: evaluated, and checkpointed at the step."""

    def __init__(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val/"))
        super().__init__(f"at step {step} (epoch {epoch}) after an evaluation: {shown}")
        self.step = step


def pause_due(run: Run, mid_epoch: bool = False) -> bool:
    """Whether a sweep trial stands at its decision point (`Reporter.pause_at_*`) short of
    its end: the step limit anywhere, the epoch limit at an epoch's end."""
    state, report = run.state, run.report
    if state.step >= run.total_steps or state.epoch >= run.spec.training.epochs:
        return False
    if report.pause_at_step is not None and state.step >= report.pause_at_step:
        return True
    return (
        not mid_epoch and report.pause_at_epoch is not None and state.epoch >= report.pause_at_epoch
    )
