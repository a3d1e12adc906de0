"""GET /api/v1/jobs/board: the rows of the jobs page, each with its progress, ETA, newest
loss, the task's board metric and throughput."""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response

from api import services
from api.auth import current_principal, require_principal
from api.http import query, reply, summary
from api.openapi import API_PREFIX, operation
from api.schemas import BoardQuery, JobBoard, JobRow
from shared import jobs
from shared.infra.models import Job
from shared.jobs.progress import job_progress
from shared.registry import TASKS

bp = Blueprint("board", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


def _value(latest: dict[str, dict[str, Any]], key: str) -> float | None:
    value = latest.get(key, {}).get("value")
    return value if value is None or math.isfinite(value) else None


def board_row(job: Job, owner: str | None, latest: dict[str, dict[str, Any]]) -> JobRow:
    fraction, eta = job_progress(job, latest)
    task = TASKS.get(job.task)
    metric = task.board_metric if task else None
    return JobRow.model_validate(
        {
            **summary(job, owner),
            "progress": fraction,
            "eta_seconds": eta,
            "latest_loss": _value(latest, "train/loss"),
            "metric_name": metric,
            "metric_value": _value(latest, f"val/{metric}") if metric else None,
            "tokens_per_s": _value(latest, "train/tokens_per_s"),
        }
    )


@operation(
    bp,
    "GET",
    "/jobs/board",
    summary="Jobs with progress and latest metrics: filter, search, sort, pages",
    query=BoardQuery,
    responses={200: JobBoard},
    errors=(400,),
)
def board() -> Response:
    """The rows of the jobs page: your jobs (an admin sees everyone's), each with its progress,
    ETA, newest loss, the task's validation metric and throughput."""
    params = query(BoardQuery)
    principal, db = current_principal(), services().db
    page, _, total = jobs.list_jobs(
        db,
        owner_id=None if principal.is_admin else principal.user_id,
        status=params.status,
        name_contains=params.q,
        sort=params.sort,
        offset=(params.page - 1) * params.per_page,
        limit=params.per_page,
        count=True,
        with_spec=True,
    )
    latest = jobs.latest_metrics(db, [j.id for j in page])
    rows = [board_row(j, j.owner, latest[j.id]) for j in page]
    pages = max(1, math.ceil((total or 0) / params.per_page))
    return reply(JobBoard(jobs=rows, total=total, page=params.page, pages=pages))
