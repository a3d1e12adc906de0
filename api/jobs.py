"""/api/v1/jobs: thin routes. Parse and validate -> call shared.jobs -> serialize."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request, send_file, url_for

from api import services
from api.errors import ApiError
from api.views import checkpoint_view, event_view, job_summary, metric_view
from shared import jobs
from shared.models import JOB_STATUSES
from shared.spec import parse_spec

bp = Blueprint("jobs", __name__)
log = logging.getLogger("seqtrain.api")


def json_body() -> Any:
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)"
        )
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "bad_request", "the body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "validation_error",
            "the body must be a JSON object",
            [{"path": "", "message": "expected an object", "type": "dict_type"}],
        )
    return body


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be an integer from {low} to {high}",
            [{"path": name, "message": f"expected an integer from {low} to {high}", "type": "int"}],
        )
    return value


def choice_arg(name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.args.get(name)
    if raw is not None and raw not in choices:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be one of: {', '.join(choices)}",
            [{"path": name, "message": f"one of: {', '.join(choices)}", "type": "enum"}],
        )
    return raw


@bp.post("/jobs")
def submit() -> Any:
    spec = parse_spec(json_body())
    svc = services()
    job = jobs.create_job(svc.db, spec)
    enqueued = True
    try:  # after commit: a worker can never receive an id that is not in SQL yet
        svc.queue.enqueue_job(job.id, job.queue)
    except Exception as exc:
        enqueued = False
        log.warning(
            "job %s: enqueue failed (%s); it stays queued in SQL", job.id, type(exc).__name__
        )
        jobs.note_event(svc.db, job.id, "api", f"enqueue failed: {type(exc).__name__}")
    response = jsonify(
        {
            "id": job.id,
            "status": job.status,
            "enqueued": enqueued,
            "url": url_for(".show", job_id=job.id),
        }
    )
    return response, 201, {"Location": url_for(".show", job_id=job.id)}


@bp.get("/jobs")
def index() -> Any:
    status = choice_arg("status", JOB_STATUSES)
    limit = int_arg("limit", 50, 1, 500) or 50
    cursor = int_arg("cursor", None, 1, 2**62)
    page, next_cursor = jobs.list_jobs(services().db, status=status, limit=limit, before_id=cursor)
    return jsonify({"jobs": [job_summary(j) for j in page], "next_cursor": next_cursor})


@bp.get("/jobs/<int:job_id>")
def show(job_id: int) -> Any:
    db = services().db
    job = jobs.get_job(db, job_id)
    body = job_summary(job)
    body["spec"] = job.spec
    body["latest_metrics"] = jobs.latest_metrics(db, job_id)
    body["events"] = [event_view(e) for e in jobs.job_events(db, job_id)]
    return jsonify(body)


@bp.get("/jobs/<int:job_id>/metrics")
def metrics(job_id: int) -> Any:
    db = services().db
    jobs.get_job(db, job_id)
    limit = int_arg("limit", 1000, 1, 10000) or 1000
    rows = jobs.list_metrics(
        db,
        job_id,
        name=request.args.get("name"),
        split=request.args.get("split"),
        after_id=int_arg("after", None, 0, 2**62),
        limit=limit,
    )
    return jsonify(
        {
            "metrics": [metric_view(m) for m in rows],
            "next_after": rows[-1].id if len(rows) == limit else None,
        }
    )


@bp.get("/jobs/<int:job_id>/checkpoints")
def checkpoints(job_id: int) -> Any:
    db = services().db
    jobs.get_job(db, job_id)
    return jsonify({"checkpoints": [checkpoint_view(c) for c in jobs.list_checkpoints(db, job_id)]})


@bp.get("/jobs/<int:job_id>/checkpoints/<int:checkpoint_id>/download")
def download_checkpoint(job_id: int, checkpoint_id: int) -> Any:
    svc = services()
    jobs.get_job(svc.db, job_id)
    ckpt = jobs.get_checkpoint(svc.db, job_id, checkpoint_id)
    if ckpt is None or not svc.store.exists(ckpt.uri):
        raise ApiError(404, "not_found", f"checkpoint {checkpoint_id} of job {job_id} not found")
    response = send_file(
        svc.store.path(ckpt.uri),
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"job-{job_id}-step-{ckpt.step}.safetensors",
    )
    response.headers["X-Checksum-SHA256"] = ckpt.sha256
    return response


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> Any:
    job = jobs.request_cancel(services().db, job_id, actor="api")
    return jsonify(job_summary(job)), 202
