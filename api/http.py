"""What every blueprint parses and answers with: the JSON body, query parameters, a job the
caller may see, a job's summary fields, and a JSON reply from a response model."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Response, request, url_for
from pydantic import BaseModel, ValidationError

from api import services
from api.auth import authorize
from api.errors import ApiError, validation_fields
from api.openapi import API_PREFIX, id_rule
from api.schemas import JobSummary
from shared import jobs
from shared.infra.models import Job

JOB = "/jobs/" + id_rule("job_id")
Q = TypeVar("Q", bound=BaseModel)


def reply(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(model.model_dump_json(), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def json_body() -> dict[str, Any]:
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


def query(model: type[Q]) -> Q:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        fields = validation_fields(exc)
        names = ", ".join(f["path"] for f in fields)
        raise ApiError(
            400, "invalid_parameter", f"invalid query parameter: {names}", fields
        ) from None


def owned_job(job_id: int) -> Job:
    job = jobs.get_job(services().db, job_id)
    authorize(job.owner_id, f"job {job_id}")
    return job


SUMMARY_FIELDS = tuple(name for name in JobSummary.model_fields if hasattr(Job, name))


def summary(job: Any, owner: str | None = None, jobs_url: str | None = None) -> dict[str, Any]:
    """A job's (or a summary row's) fields; `jobs_url` (url_for("jobs.index")) saves a URL
    build per job."""
    fields = {name: getattr(job, name) for name in SUMMARY_FIELDS}
    fields["owner"] = owner
    fields["url"] = (
        f"{jobs_url}/{job.id}" if jobs_url is not None else url_for("jobs.show", job_id=job.id)
    )
    return fields


def job_url(job_id: int) -> str:
    """What url_for("jobs.show", job_id=...) gives, without a URL map lookup per request."""
    return f"{request.script_root}{API_PREFIX}/jobs/{job_id}"
