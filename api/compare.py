"""/api/v1/compare?jobs=3,5,9: two to eight jobs side by side: each job's summary, its final
metrics (the newest value of each split/name), its best validation metrics (by each
metric's direction) and the spec fields whose values differ between the jobs.

The comparison page (/compare?jobs=...) draws the curves from each job's /metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api import services
from api.auth import current_principal, require_principal
from api.errors import ApiError
from api.http import job_url, query, reply
from api.openapi import API_PREFIX, ID_MAX, operation
from shared import jobs
from shared.infra.models import Job, Metric
from shared.protocol import JobStatus
from shared.registry import TASKS

bp = Blueprint("compare", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)

MIN_JOBS, MAX_JOBS = 2, 8
# Validation metrics other than a task's selection metric: these words mean lower is better.
LOWER_IS_BETTER = ("loss", "perplexity", "ece")


class CompareQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: str = Field(
        min_length=1,
        max_length=200,
        description=f"{MIN_JOBS} to {MAX_JOBS} job ids, comma-separated, e.g. 3,5,9.",
    )


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricPoint(_Out):
    value: float
    step: int
    epoch: int


class ComparedJob(_Out):
    id: int
    name: str
    status: JobStatus
    task: str
    model_type: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str
    final: dict[str, MetricPoint] = Field(
        description='The newest value of each metric, keyed "<split>/<name>".'
    )
    best: dict[str, MetricPoint] = Field(
        description='The best value of each validation metric, keyed "val/<name>".'
    )


class SpecDifference(_Out):
    path: str = Field(description="Dotted path in the spec, e.g. training.lr.")
    values: list[Any] = Field(
        description="Each job's value, in the order of `jobs`; null where a spec lacks it."
    )


class Comparison(_Out):
    jobs: list[ComparedJob]
    directions: dict[str, str] = Field(
        description='"max" or "min" for each metric in `best`: the direction that is better.'
    )
    spec_differences: list[SpecDifference] = Field(
        description="Only the spec fields whose values differ between the jobs."
    )


def parse_ids(text: str) -> list[int]:
    """`3,5,9` -> [3, 5, 9]; a 400 naming `jobs` for anything else."""
    parts = [part.strip() for part in text.split(",")]
    ids: list[int] = []
    for part in parts:
        if not (part.isascii() and part.isdigit() and len(part) <= 19 and 1 <= int(part) <= ID_MAX):
            shown = part if len(part) <= 40 else part[:40] + "..."
            raise _bad_jobs(f"{shown!r} is not a job id (a whole number from 1 to {ID_MAX})")
        ids.append(int(part))
    if len(set(ids)) != len(ids):
        raise _bad_jobs("each job may be named once")
    if not MIN_JOBS <= len(ids) <= MAX_JOBS:
        raise _bad_jobs(f"name {MIN_JOBS} to {MAX_JOBS} jobs; got {len(ids)}")
    return ids


def _bad_jobs(message: str) -> ApiError:
    return ApiError(
        400,
        "invalid_parameter",
        f"invalid query parameter: jobs: {message}",
        [{"path": "jobs", "message": message, "type": "value_error"}],
    )


def visible_jobs(ids: Sequence[int]) -> list[Job]:
    """The jobs in the order asked; a 404 naming `jobs` for one that does not exist or that
    the caller may not see (the two answer alike, so an id tells nothing of others' jobs)."""
    with services().db.session() as session:
        found = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}
    principal = current_principal()
    hidden = [i for i in ids if i not in found or not principal.may_see(found[i].owner_id)]
    if hidden:
        names = ", ".join(str(i) for i in hidden)
        message = f"job{'s' if len(hidden) > 1 else ''} {names} not found"
        raise ApiError(
            404, "not_found", message, [{"path": "jobs", "message": message, "type": "not_found"}]
        )
    return [found[i] for i in ids]


def direction(task: str, name: str) -> str:
    """ "max" or "min": the better way for validation metric `name` of a `task` job."""
    info = TASKS.get(task)
    if info is not None and name == info.selection_metric:
        return "max" if info.maximize else "min"
    return "min" if any(word in name for word in LOWER_IS_BETTER) else "max"


def best_metrics(job_ids: Sequence[int], tasks: dict[int, str]) -> dict[int, dict[str, Any]]:
    """job id -> {"val/<name>": {value, step, epoch}} at each validation metric's best (the
    earliest step on a tie)."""
    rows = select(Metric.job_id, Metric.name, Metric.value, Metric.step, Metric.epoch).where(
        Metric.job_id.in_(job_ids), Metric.split == "val"
    )
    best: dict[int, dict[str, Any]] = {job_id: {} for job_id in job_ids}
    with services().db.session() as session:
        for job_id, name, value, step, epoch in session.execute(rows.order_by(Metric.id)):
            key, seen = f"val/{name}", best[job_id]
            lower = direction(tasks[job_id], name) == "min"
            old = seen.get(key)
            if old is None or (value < old["value"] if lower else value > old["value"]):
                seen[key] = {"value": value, "step": step, "epoch": epoch}
    return best


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves; an empty dict is one too."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def spec_differences(specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dotted paths whose values are not the same in every spec, with each spec's value
    (None where a spec lacks the path), in the first spec's order of fields."""
    flat = [flatten(spec) for spec in specs]
    paths = list(dict.fromkeys(path for one in flat for path in one))
    differences = []
    for path in paths:
        # Compared as JSON, so 1, 1.0 and true differ and a missing path differs from null.
        shown = {json.dumps(one[path], sort_keys=True) if path in one else "" for one in flat}
        if len(shown) > 1:
            differences.append({"path": path, "values": [one.get(path) for one in flat]})
    return differences


@operation(
    bp,
    "GET",
    "/compare",
    summary="Compare 2 to 8 jobs: final and best metrics, spec differences",
    query=CompareQuery,
    responses={200: Comparison},
    errors=(400, 404),
)
def compare() -> Response:
    """Each job's summary, its final metrics (the newest value of each split/name), its best
    validation metrics (the task's selection metric by its direction; other metrics named
    loss, perplexity or ece lowest, the rest highest) and the spec fields that differ. The
    curves are each job's `GET /jobs/<id>/metrics`."""
    ids = parse_ids(query(CompareQuery).jobs)
    found = visible_jobs(ids)
    db = services().db
    final = jobs.latest_metrics(db, ids)
    best = best_metrics(ids, {job.id: job.task for job in found})
    directions = {
        key: direction(job.task, key.split("/", 1)[1]) for job in found for key in best[job.id]
    }
    compared = [
        ComparedJob.model_validate(
            {
                **{name: getattr(job, name) for name in SUMMARY},
                "url": job_url(job.id),
                "final": final[job.id],
                "best": best[job.id],
            }
        )
        for job in found
    ]
    body = Comparison(
        jobs=compared,
        directions=dict(sorted(directions.items())),
        spec_differences=[
            SpecDifference.model_validate(d) for d in spec_differences(j.spec for j in found)
        ],
    )
    return reply(body)


SUMMARY = ("id", "name", "status", "task", "model_type", "created_at", "started_at", "finished_at")
