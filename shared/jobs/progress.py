"""A job's progress: the fraction of its planned steps done and the seconds left, computed
once for the job detail, the jobs board and the live stream (the CLI draws what they send)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from shared.infra.models import Job, utcnow
from shared.protocol import JobStatus


class Progress(NamedTuple):
    fraction: float | None  # 0-1; None while a first epoch has not told the pace
    eta_seconds: float | None  # at the current pace; only while running


def job_progress(
    job: Job, latest: dict[str, dict[str, Any]], now: datetime | None = None
) -> Progress:
    """From the job's step and the step count of its finished epochs (`latest` is
    `latest_metrics`, keyed "<split>/<name>"). The planned steps are the trainer's own plan
    (`total_steps`), else `max_steps`, or the steps per epoch times `epochs` once an epoch
    ended, whichever is fewer."""
    if job.status == JobStatus.SUCCEEDED:
        return Progress(1.0, None)
    training = job.spec.get("training", {})
    epochs, max_steps = training.get("epochs") or 0, training.get("max_steps")
    planned = [float(max_steps)] if max_steps else []
    if job.total_steps:  # what the trainer planned when the attempt started
        planned.append(float(job.total_steps))
    epoch_end = latest.get("val/loss") or latest.get("train/samples_per_s")
    if not job.total_steps and epoch_end and epoch_end["epoch"] > 0 and epochs:
        planned.append(epoch_end["step"] / epoch_end["epoch"] * epochs)
    if not planned or min(planned) <= 0:
        return Progress(0.0, None) if job.step == 0 else Progress(None, None)
    fraction = min(1.0, job.step / min(planned))
    eta = None
    if job.status == JobStatus.RUNNING and job.started_at is not None and 0 < fraction < 1:
        elapsed = ((now or utcnow()) - job.started_at).total_seconds()
        eta = max(0.0, elapsed * (1 - fraction) / fraction)
    return Progress(fraction, eta)
