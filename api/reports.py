"""GET /api/v1/jobs/<id>/report: a finished job's evaluation report (computed by the worker
on its best checkpoint; shared.jobs.reports describes the body)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field

from api import services
from api.auth import require_principal
from api.errors import ApiError
from api.http import JOB, owned_job, reply
from api.openapi import API_PREFIX, operation
from shared import jobs
from shared.infra.models import Job
from shared.protocol import JobStatus

bp = Blueprint("reports", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


class ReportResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: int
    attempt: int = Field(description="The attempt that trained the job to its end.")
    checkpoint_id: int | None = Field(description="The best checkpoint the report evaluates.")
    created_at: datetime
    report: dict[str, Any] = Field(
        description=(
            'The task\'s report: {"task", "checkpoint": {"id", "step", "epoch"}, "summary": '
            '{"validation/accuracy": ..., ...}, "splits": {"validation": {...}, "test": {...}}}'
        )
    )


def missing_reason(job: Job) -> str:
    """Why a job has no report (yet)."""
    if job.status == JobStatus.QUEUED:
        return "it is queued"
    if job.status == JobStatus.RUNNING:
        return "it is running"
    if job.status == JobStatus.FAILED:
        return "it failed"
    if job.status == JobStatus.CANCELLED:
        return "it was cancelled"
    return "it finished before reports existed, or its report failed (see the job's events)"


@operation(
    bp,
    "GET",
    JOB + "/report",
    summary="A finished job's evaluation report",
    responses={200: ReportResponse},
    errors=(404,),
)
def job_report(job_id: int) -> Response:
    """Confusion matrix, per-class scores and calibration (classification), per-entity scores
    (tagging), loss by position and samples (language models), on the best checkpoint over
    the validation and test splits."""
    job = owned_job(job_id)
    report = jobs.get_report(services().db, job.id)
    if report is None:
        raise ApiError(404, "not_found", f"job {job.id} has no report: {missing_reason(job)}")
    return reply(
        ReportResponse(
            job_id=report.job_id,
            attempt=report.attempt,
            checkpoint_id=report.checkpoint_id,
            created_at=report.created_at,
            report=report.body,
        )
    )
