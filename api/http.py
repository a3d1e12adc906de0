"""What every blueprint parses and answers with: the JSON body, query parameters, a job the
caller may see, a job's summary fields, and a JSON reply from a response model."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Response, request, url_for
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from api import services
from api.auth import authorize
from api.errors import ApiError, validation_fields
from api.openapi import API_PREFIX, id_rule
from api.schemas import JobSummary
from shared import jobs, safejson
from shared.infra.models import Job

JOB = "/jobs/" + id_rule("job_id")
Q = TypeVar("Q", bound=BaseModel)


def reply(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(model.model_dump_json(), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def json_body() -> dict[str, Any]:
    """The request's JSON object: 415 unless JSON, 413 past the size limit (chunked bodies
    too), 400 for invalid JSON or nesting deeper than `safejson.MAX_DEPTH`, 422 unless an
    object. The one place a JSON body is decoded."""
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)"
        )
    try:
        body = safejson.loads(raw_body())
    except safejson.JsonTooDeep as exc:
        raise ApiError(
            400,
            "bad_request",
            f"the JSON body is {exc}",
            [{"path": "", "message": str(exc), "type": "json_depth"}],
        ) from None
    except ValueError:
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "validation_error",
            "the body must be a JSON object",
            [{"path": "", "message": "expected an object", "type": "dict_type"}],
        )
    return body


def raw_body() -> bytes:
    """The body's bytes, at most MAX_CONTENT_LENGTH. A body without
    Content-Length (chunked) is read to one byte past the limit, so that one over it is a
    413 rather than cut short."""
    limit = request.max_content_length
    if limit is None or request.content_length is not None:
        try:
            return request.get_data(cache=True)  # werkzeug refuses a declared length past it
        except RequestEntityTooLarge:
            raise _too_large(limit or 0) from None
    if "wsgi.input_terminated" not in request.environ:
        return b""  # a server that does not end the stream: nothing is safe to read
    stream, chunks, size = request.environ["wsgi.input"], [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise _too_large(limit)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_entity_too_large", f"the body is larger than the {limit:,}-byte limit"
    )


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
