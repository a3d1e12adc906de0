"""/api/v1/jobs: submit, retry, list, detail, metrics, samples, checkpoints (+ download),
cancel. Thin routes: parse and validate -> call api.submissions or shared.jobs -> serialize."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, redirect, request, send_file, stream_with_context, url_for
from pydantic import Field
from werkzeug.wrappers import Response as BaseResponse

from api import services, submissions
from api.auth import authorize, current_principal, require_principal
from api.errors import ApiError
from api.http import JOB, job_url, json_body, owned_job, query, reply, summary
from api.openapi import API_PREFIX, BINARY, id_rule, operation
from api.schemas import (
    CheckpointList,
    CheckpointOut,
    JobCreated,
    JobList,
    JobSummary,
    ListJobsQuery,
    MetricList,
    MetricsQuery,
    SampleList,
    _Out,
)
from api.schemas import JobDetail as BaseDetail
from shared import jobs
from shared.infra.models import TERMINAL_STATUSES, Job
from shared.infra.storage import ArtifactMissing
from shared.jobs import waiting
from shared.jobs.progress import job_progress
from shared.protocol import JobStatus
from shared.spec import JobSpec, parse_spec
from shared.sweeps.store import trial_of_job

bp = Blueprint("jobs", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


class SweepRef(_Out):
    id: int
    number: int = Field(description="The trial's number in the sweep.")
    url: str


class JobDetail(BaseDetail):
    """A job's detail, with the sweep it is a trial of."""

    sweep: SweepRef | None = Field(None, description="The sweep this job is a trial of.")


def created(result: submissions.Submitted) -> Response:
    """201 with the new job, or 200 with the job an Idempotency-Key made first."""
    location = job_url(result.job_id)
    body = JobCreated(
        id=result.job_id, status=result.status, enqueued=result.enqueued, url=location
    )
    if result.replayed:
        return reply(body, 200, {"Location": location, "Idempotent-Replayed": "true"})
    return reply(body, 201, {"Location": location})


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
    key = submissions.idempotency_key()
    return created(submissions.submit(parse_spec(json_body()), key))


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
    page, next_cursor, _ = jobs.list_jobs(
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
    summary="One job: status, place in the queue, progress, latest metrics, events, spec",
    responses={200: JobDetail},
    errors=(404,),
)
def show(job_id: int) -> Response:
    """A queued job also says where it stands (`queue_position`) and why it waits
    (`wait_reason`); a running one asked to make room for another names it (`preempt_by`)."""
    job, owner, latest, events = jobs.job_detail(services().db, job_id)
    authorize(job.owner_id, f"job {job_id}")
    detail = summary(job, owner)
    detail.update(
        spec=job.spec,
        latest_metrics=latest,
        progress=job_progress(job, latest)._asdict(),
        events=events,
        devices=job.devices,
        estimate=job.estimate,
        **scheduling(job),
    )
    trial = trial_of_job(services().db, job_id)
    if trial is not None:
        url = f"{request.script_root}{API_PREFIX}/sweeps/{trial[0]}"
        detail["sweep"] = {"id": trial[0], "number": trial[1], "url": url}
    return reply(JobDetail.model_validate(detail))


def scheduling(job: Job) -> dict[str, Any]:
    """A job's scheduling fields: where a queued job stands and why it waits, and the job a
    running one is asked to make room for."""
    svc = services()
    queued, running = job.status == JobStatus.QUEUED, job.status == JobStatus.RUNNING
    wait = waiting.queue_wait(svc.db, svc.settings, job.id) if queued else None
    return {
        "nodes": job.nodes,
        "preemptions": job.preemptions,
        "preempt_by": job.preempt_by if running else None,
        "queue_position": wait.position if wait else None,
        "wait_reason": wait.reason if wait else None,
    }


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
    JOB + "/samples",
    summary="Sample translations of each evaluation (seq2seq), newest epoch first",
    responses={200: SampleList},
    errors=(404,),
)
def samples(job_id: int) -> Response:
    """A few (source, reference, hypothesis) triples stored after each validation (and the
    test evaluation) of a seq2seq job, of the newest 100 evaluations; empty for other tasks."""
    owned_job(job_id)
    rows = jobs.list_samples(services().db, job_id)
    return reply(SampleList.model_validate({"samples": rows}))


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
    The `X-Checksum-SHA256` header carries the file's sha256. From an `s3://` store the API
    streams the object, or redirects (302) to a presigned URL when those are configured."""
    owned_job(job_id)
    svc = services()
    ckpt = jobs.get_checkpoint(svc.db, job_id, checkpoint_id)
    missing = ApiError(404, "not_found", f"checkpoint {checkpoint_id} of job {job_id} not found")
    if ckpt is None:
        raise missing
    filename = f"job-{job_id}-step-{ckpt.step}.safetensors"
    path = svc.store.local_path(ckpt.uri)
    if path is not None:
        if not path.is_file():
            raise missing
        response = send_file(path, mimetype=BINARY, as_attachment=True, download_name=filename)
    else:
        response = store_download(ckpt.uri, filename, ckpt.bytes, missing)
    response.headers["X-Checksum-SHA256"] = ckpt.sha256
    return response


def store_download(key: str, filename: str, size: int, missing: ApiError) -> BaseResponse:
    """A redirect to a presigned URL, or the object streamed in 1 MiB chunks; `missing`
    when the store has no such object."""
    store = services().store
    url = store.presigned_url(key, filename)
    if url is not None:
        if not store.exists(key):
            raise missing
        return redirect(url, 302)
    try:
        body = store.open(key)
    except ArtifactMissing:
        raise missing from None

    def chunks() -> Iterator[bytes]:
        with body:
            while chunk := body.read(1 << 20):
                yield chunk

    response = Response(stream_with_context(chunks()), mimetype=BINARY)
    response.headers["Content-Length"] = str(size)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
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
    owner = jobs.owners(services().db, job_ids={job_id}).get(job_id, jobs.Owner()).name
    return reply(JobSummary.model_validate(summary(job, owner)), 202)


@operation(
    bp,
    "POST",
    JOB + "/retry",
    summary="Run a finished job again as a new job",
    responses={201: JobCreated, 200: JobCreated},
    errors=(400, 404, 409, 422),
)
def retry(job_id: int) -> Response:
    """A new job with the same spec and the same dataset versions, owned by the caller and
    queued at once. Allowed for succeeded, failed and cancelled jobs. Placement and the
    `Idempotency-Key` header work as on submit."""
    job = owned_job(job_id)
    key = submissions.idempotency_key()
    if job.status not in TERMINAL_STATUSES:
        raise ApiError(409, "conflict", f"job {job_id} is {job.status}; retry a finished job")
    spec = JobSpec.model_validate(job.spec)
    links = submissions.pinned_datasets(job_id, spec)
    return created(submissions.submit(spec, key, links, note=f"retry of job {job_id}"))
