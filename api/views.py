"""ORM rows -> JSON-ready dicts. Timestamps are ISO 8601 in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for

from shared.models import Checkpoint, Job, JobEvent, Metric


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "task": job.task,
        "model_type": job.model_type,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "epoch": job.epoch,
        "step": job.step,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "created_at": _ts(job.created_at),
        "updated_at": _ts(job.updated_at),
        "started_at": _ts(job.started_at),
        "finished_at": _ts(job.finished_at),
        "url": url_for("jobs.show", job_id=job.id),
    }


def event_view(event: JobEvent) -> dict[str, Any]:
    return {
        "ts": _ts(event.ts),
        "attempt": event.attempt,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "actor": event.actor,
        "message": event.message,
    }


def metric_view(metric: Metric) -> dict[str, Any]:
    return {
        "id": metric.id,
        "attempt": metric.attempt,
        "step": metric.step,
        "epoch": metric.epoch,
        "split": metric.split,
        "name": metric.name,
        "value": metric.value,
        "ts": _ts(metric.ts),
    }


def checkpoint_view(ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "id": ckpt.id,
        "attempt": ckpt.attempt,
        "step": ckpt.step,
        "epoch": ckpt.epoch,
        "sha256": ckpt.sha256,
        "bytes": ckpt.bytes,
        "metrics": ckpt.metrics,
        "created_at": _ts(ckpt.created_at),
        "download_url": url_for(
            "jobs.download_checkpoint", job_id=ckpt.job_id, checkpoint_id=ckpt.id
        ),
    }
