"""/api/v1/jobs: thin routes. Parse and validate -> call shared.jobs -> serialize."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Blueprint, Response, request, send_file, url_for
from pydantic import BaseModel, ValidationError

from api import services
from api.auth import authorize, current_principal, require_principal
from api.errors import ApiError, validation_fields
from api.openapi import API_PREFIX, BINARY, id_rule, operation
from api.schemas import (
    CheckpointList,
    CheckpointOut,
    JobCreated,
    JobDetail,
    JobList,
    JobSummary,
    ListJobsQuery,
    MetricList,
    MetricsQuery,
)
from shared import jobs
from shared.data import datasets as registry
from shared.infra.models import Dataset, Job
from shared.jobs.routing import PlacementError, check_placement
from shared.spec import JobSpec, dataset_references, parse_spec

bp = Blueprint("jobs", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
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
    """What url_for(".show", job_id=...) gives, without a URL map lookup per submission."""
    return f"{request.script_root}{API_PREFIX}/jobs/{job_id}"


def resolve_datasets(spec: JobSpec) -> dict[str, int]:
    """Pin each dataset the spec names to a version the caller may use: role -> dataset id."""
    principal, links, errors = current_principal(), {}, []
    fields = {"train": "dataset", "validation": "validation_dataset", "test": "test_dataset"}
    for role, reference in dataset_references(spec).items():
        field = fields[role]
        if reference is None:
            continue
        try:
            resolved = registry.resolve(
                services().db, reference, principal.user_id, principal.is_admin, f"data.{field}"
            )
            registry.check_task(resolved, spec.task, f"data.{field}")
        except registry.DatasetError as exc:
            errors.append(
                {"path": exc.field or f"data.{field}", "message": exc.message, "type": "dataset"}
            )
            continue
        if isinstance(resolved, Dataset):
            links[role] = resolved.id
    if errors:
        paths = ", ".join(e["path"] for e in errors)
        raise ApiError(422, "validation_error", f"invalid job spec: {paths}", errors)
    return links


IDEMPOTENCY_KEY_MAX = 200


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header: 1-200 printable ASCII characters, or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX or not all(33 <= ord(c) < 127 for c in key):
        raise ApiError(
            400,
            "bad_header",
            "Idempotency-Key must be 1-200 printable ASCII characters without spaces",
            fields=[{"path": "Idempotency-Key", "message": "invalid", "type": "header"}],
        )
    return key


def replayed(job: Job, spec: JobSpec) -> Response:
    """The answer to a retried POST: the job the key created first, if the spec is the same."""
    if job.spec != spec.model_dump(mode="json"):
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key was already used for job {job.id} with a different spec",
            fields=[
                {
                    "path": "Idempotency-Key",
                    "message": "reused with a different spec",
                    "type": "header",
                }
            ],
        )
    location = url_for(".show", job_id=job.id)
    body = JobCreated(id=job.id, status=job.status, enqueued=True, url=location)
    return reply(body, 200, {"Location": location, "Idempotent-Replayed": "true"})


@operation(
    bp,
    "POST",
    "/jobs",
    summary="Submit a training job",
    body=JobSpec,
    responses={201: JobCreated, 200: JobCreated},
    errors=(400, 413, 415, 422),
)
def submit() -> Response:
    """Validates the spec, stores the job (`queued`) and enqueues its id. A bad spec is a 422
    naming every failing field, and nothing is stored. With an `Idempotency-Key` header, a
    retried POST answers 200 with the job the key created first (`Idempotent-Replayed`)."""
    key = idempotency_key()
    spec = parse_spec(json_body())
    svc, principal = services(), current_principal()
    if key is not None:  # a retried POST: looked up here, in parallel, not in the group's flush
        earlier = jobs.keyed_job(svc.db, principal.user_id, key)
        if earlier is not None:
            return replayed(earlier, spec)
    links = resolve_datasets(spec)
    try:  # a job no registered worker could ever hold is refused, with the numbers
        estimate = check_placement(svc.db, spec, svc.settings)
    except PlacementError as exc:
        fields = [{"path": exc.field, "message": exc.message, "type": "placement"}]
        raise ApiError(422, "validation_error", f"invalid job spec: {exc.field}", fields) from None
    new = jobs.NewJob(spec, principal.user_id, principal.name, links, key, estimate)
    try:
        job_id, enqueued = svc.submissions.submit(new)
    except jobs.IdempotentReplay as replay:
        return replayed(replay.job, spec)
    location = job_url(job_id)
    created = JobCreated(id=job_id, status="queued", enqueued=enqueued, url=location)
    return reply(created, 201, {"Location": location})


@operation(
    bp,
    "GET",
    "/jobs",
    summary="List jobs, newest first",
    query=ListJobsQuery,
    responses={200: JobList},
    errors=(400,),
)
def index() -> Response:
    """Your jobs (an admin sees everyone's), keyset-paginated by `cursor`."""
    params = query(ListJobsQuery)
    principal = current_principal()
    owner = None if principal.is_admin else principal.user_id
    page, next_cursor = jobs.list_jobs(
        services().db,
        status=params.status,
        limit=params.limit,
        before_id=params.cursor,
        owner_id=owner,
    )
    jobs_url = url_for(".index")
    items = [JobSummary.model_validate(summary(row, row.owner, jobs_url)) for row in page]
    return reply(JobList(jobs=items, next_cursor=next_cursor))


@operation(
    bp,
    "GET",
    JOB,
    summary="One job: status, progress, latest metrics, events, spec",
    responses={200: JobDetail},
    errors=(404,),
)
def show(job_id: int) -> Response:
    job, owner, latest, events = jobs.job_detail(services().db, job_id)
    authorize(job.owner_id, f"job {job_id}")
    detail = summary(job, owner)
    detail.update(
        spec=job.spec,
        latest_metrics=latest,
        events=events,
        devices=job.devices,
        estimate=job.estimate,
    )
    return reply(JobDetail.model_validate(detail))


@operation(
    bp,
    "GET",
    JOB + "/metrics",
    summary="Metric rows in write order",
    query=MetricsQuery,
    responses={200: MetricList},
    errors=(400, 404),
)
def metrics(job_id: int) -> Response:
    owned_job(job_id)
    params = query(MetricsQuery)
    rows = jobs.list_metrics(
        services().db,
        job_id,
        name=params.name,
        split=params.split,
        after_id=params.after,
        limit=params.limit,
    )
    next_after = rows[-1].id if len(rows) == params.limit else None
    return reply(MetricList.model_validate({"metrics": rows, "next_after": next_after}))


@operation(
    bp,
    "GET",
    JOB + "/checkpoints",
    summary="Checkpoints with checksums and download links",
    responses={200: CheckpointList},
    errors=(404,),
)
def checkpoints(job_id: int) -> Response:
    owned_job(job_id)
    items = [
        CheckpointOut.model_validate(
            {
                **{k: getattr(c, k) for k in CheckpointOut.model_fields if hasattr(c, k)},
                "download_url": url_for(".download_checkpoint", job_id=job_id, checkpoint_id=c.id),
            }
        )
        for c in jobs.list_checkpoints(services().db, job_id)
    ]
    return reply(CheckpointList(checkpoints=items))


@operation(
    bp,
    "GET",
    JOB + "/checkpoints/" + id_rule("checkpoint_id") + "/download",
    summary="Download a checkpoint (one safetensors file)",
    responses={200: BINARY},
    errors=(404,),
)
def download_checkpoint(job_id: int, checkpoint_id: int) -> Any:
    """Weights under `model.*`; optimizer, RNG state, vocabulary and spec in the same file.
    The `X-Checksum-SHA256` header carries the file's sha256."""
    owned_job(job_id)
    svc = services()
    ckpt = jobs.get_checkpoint(svc.db, job_id, checkpoint_id)
    if ckpt is None or not svc.store.exists(ckpt.uri):
        raise ApiError(404, "not_found", f"checkpoint {checkpoint_id} of job {job_id} not found")
    response = send_file(
        svc.store.path(ckpt.uri),
        mimetype=BINARY,
        as_attachment=True,
        download_name=f"job-{job_id}-step-{ckpt.step}.safetensors",
    )
    response.headers["X-Checksum-SHA256"] = ckpt.sha256
    return response


@operation(
    bp,
    "POST",
    JOB + "/cancel",
    summary="Cancel a queued or running job",
    responses={202: JobSummary},
    errors=(404, 409),
)
def cancel(job_id: int) -> Response:
    """A queued job is cancelled at once; a running one is stopped within 2 s."""
    owned_job(job_id)
    job = jobs.request_cancel(services().db, job_id, actor=current_principal().name)
    owner = jobs.owner_names(services().db, {job.owner_id}).get(job.owner_id)
    return reply(JobSummary.model_validate(summary(job, owner)), 202)
