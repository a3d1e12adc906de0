"""/api/v1/jobs/<id>/predictions and /api/v1/outputs: work a worker does on a trained job's
best checkpoint through the queue (job outputs: batch predictions, exports), its progress,
cancel and the file it made. `submit_output` is what each kind's route calls."""

from __future__ import annotations

import logging
from typing import Any, Literal

from flask import Blueprint, Response, send_file, url_for
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.wrappers import Response as BaseResponse

from api import services
from api.auth import current_principal, require_principal
from api.errors import ApiError
from api.http import JOB, json_body, owned_job, reply
from api.jobs import store_download
from api.openapi import API_PREFIX, BINARY, id_rule, operation
from api.schemas import _Out
from shared import jobs
from shared.data import datasets as registry
from shared.infra.models import Job, JobOutput
from shared.protocol import JobStatus
from shared.registry import tasks_serving

bp = Blueprint("outputs", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
OUTPUT = "/outputs/" + id_rule("output_id")
log = logging.getLogger(__name__)

# The dataset formats whose rows each task predicts over (a tagger splits texts on spaces).
PREDICTION_FORMATS = {
    "classification": ("tsv", "csv", "jsonl"),
    "tagging": ("conll", "tsv", "csv", "jsonl", "text"),
    "language_modeling": ("text", "tsv", "csv", "jsonl"),
    # Each row's source (or text) translated; a pair's target is kept as the reference.
    "seq2seq": ("tsv", "csv", "jsonl"),
}


# PredictionsRequest's seq2seq fields: the job's spec.decoding where left out.
DECODING_OPTIONS = ("beam_size", "length_penalty", "max_length")


class PredictionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        min_length=1,
        max_length=300,
        description="The rows to predict: `dataset:<id>`, `dataset:<name>`, `<name>` or "
        "`builtin:<name>`.",
    )
    format: Literal["jsonl", "csv"] = Field("jsonl", description="The file written.")
    length: int = Field(100, ge=1, le=2000, description="language modelling: tokens per row.")
    temperature: float = Field(0.8, gt=0.0, le=5.0, description="language modelling: sampling.")
    top_k: int | None = Field(None, ge=1, le=100_000, description="language modelling: top k.")
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="language modelling: row i samples with seed + i."
    )
    beam_size: int | None = Field(
        None, ge=1, le=16, description="seq2seq: hypotheses kept; null: the spec's decoding."
    )
    length_penalty: float | None = Field(
        None, ge=0.0, le=5.0, description="seq2seq: length penalty; null: the spec's decoding."
    )
    max_length: int | None = Field(
        None,
        ge=1,
        le=512,
        description="seq2seq: most tokens a translation has; null: the spec's decoding.",
    )


class OutputLinks(_Out):
    self: str
    download: str
    cancel: str


class OutputOut(_Out):
    id: int
    job_id: int
    kind: str
    status: JobStatus
    params: dict[str, Any]
    dataset_id: int | None
    checkpoint_id: int | None
    attempt: int
    rows_done: int
    rows_total: int | None
    progress: float | None = Field(description="Fraction of the rows done, 0 to 1.")
    error: str | None
    filename: str | None
    content_type: str | None
    bytes: int | None
    sha256: str | None
    summary: dict[str, Any]
    created_at: Any
    started_at: Any
    finished_at: Any
    links: OutputLinks


class OutputList(_Out):
    outputs: list[OutputOut]


def view(output: JobOutput) -> OutputOut:
    fields = {k: getattr(output, k) for k in OutputOut.model_fields if hasattr(output, k)}
    done, total = output.rows_done or 0, output.rows_total
    if output.status == JobStatus.SUCCEEDED:
        progress: float | None = 1.0
    else:
        progress = min(done / total, 1.0) if total else None
    links = {
        "self": url_for("outputs.show", output_id=output.id),
        "download": url_for("outputs.download", output_id=output.id),
        "cancel": url_for("outputs.cancel", output_id=output.id),
    }
    return OutputOut.model_validate({**fields, "progress": progress, "links": links})


def owned_output(output_id: int) -> JobOutput:
    """The output, when the caller may see its job (owners their own, admins all)."""
    try:
        output = jobs.get_output(services().db, output_id)
    except jobs.OutputNotFound:
        raise ApiError(404, "not_found", f"output {output_id} not found") from None
    owned_job(output.job_id)
    return output


def submit_output(
    job: Job, kind: str, params: dict[str, Any], dataset_id: int | None = None
) -> Response:
    """Create a queued output of `kind` on the job's best checkpoint, enqueue it (the
    reconciler enqueues it when Redis cannot be reached) and answer 202 with it."""
    svc = services()
    ckpt = jobs.best_checkpoint(svc.db, job.id)
    if ckpt is None or not svc.store.exists(ckpt.uri):
        raise ApiError(409, "conflict", f"job {job.id} has no checkpoint yet")
    output = jobs.create_output(
        svc.db,
        job_id=job.id,
        owner_id=current_principal().user_id,
        kind=kind,
        params=params,
        queue=job.queue,
        checkpoint_id=ckpt.id,
        dataset_id=dataset_id,
    )
    try:
        svc.queue.enqueue_outputs([(output.id, output.queue)])
    except Exception as exc:  # stays queued in SQL; the reconciler enqueues it
        log.warning("output %s: enqueue failed (the reconciler retries): %s", output.id, exc)
    location = url_for("outputs.show", output_id=output.id)
    return reply(view(output), 202, {"Location": location})


def _dataset_error(message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        f"invalid dataset: {message}",
        [{"path": "dataset", "message": message, "type": "dataset"}],
    )


def check_task(job: Job, body: PredictionsRequest) -> None:
    """409 for a job whose task predicts nothing; 422 for decoding settings given to a job
    that does not translate."""
    serving = (*tasks_serving("predict"), *tasks_serving("generate"), *tasks_serving("translate"))
    if job.task not in serving:
        raise ApiError(409, "conflict", f"job {job.id} is a {job.task} job; it cannot predict")
    given = [name for name in DECODING_OPTIONS if getattr(body, name) is not None]
    if given and job.task not in tasks_serving("translate"):
        raise ApiError(
            422,
            "validation_error",
            f"{', '.join(given)}: only a job that translates (seq2seq) decodes with these",
            [{"path": name, "message": "seq2seq only", "type": "task"} for name in given],
        )


def prediction_dataset(job: Job, reference: str) -> registry.Resolved:
    """The dataset a prediction reads, if the caller may use it and the job's task can
    read its rows; 422 naming `dataset` otherwise."""
    principal = current_principal()
    name = reference.removeprefix("dataset:")
    if reference.startswith("dataset:") and not (name.isascii() and name.isdigit()):
        reference = name  # dataset:<name>: the caller's newest upload of that name
    try:
        resolved = registry.resolve(
            services().db, reference, principal.user_id, principal.is_admin, "dataset"
        )
    except registry.DatasetError as exc:
        raise _dataset_error(exc.message) from None
    formats = PREDICTION_FORMATS.get(job.task, ())
    shown = resolved.reference if isinstance(resolved, registry.Builtin) else reference
    pairs = bool(resolved.options.get("source_column"))
    if pairs and job.task not in tasks_serving("translate"):
        raise _dataset_error(
            f"{shown} holds source/target pairs; only a seq2seq job translates them, a "
            f"{job.task} job reads texts"
        )
    if resolved.format not in formats:
        raise _dataset_error(
            f"{shown} is a {resolved.format} dataset; a {job.task} job predicts over "
            + " / ".join(formats)
        )
    return resolved


@operation(
    bp,
    "POST",
    JOB + "/predictions",
    summary="Predict over a whole dataset, on a worker",
    body=PredictionsRequest,
    responses={202: OutputOut},
    errors=(400, 404, 409, 413, 415, 422),
    tag="outputs",
)
def predictions(job_id: int) -> Response:
    """Queues a batch prediction over every row of `dataset` with the job's best checkpoint:
    labels with probabilities, tags, generations or translations, written as JSONL or CSV.
    Follow it at `links.self`; download it from `links.download` once it has succeeded."""
    body = PredictionsRequest.model_validate(json_body())
    job = owned_job(job_id)
    check_task(job, body)
    resolved = prediction_dataset(job, body.dataset)
    dataset_id = None if isinstance(resolved, registry.Builtin) else resolved.id
    params = body.model_dump(exclude_none=True)
    params["dataset"] = (
        resolved.reference if isinstance(resolved, registry.Builtin) else f"dataset:{dataset_id}"
    )
    return submit_output(job, "predictions", params, dataset_id)


@operation(
    bp,
    "GET",
    JOB + "/outputs",
    summary="A job's outputs (batch predictions, exports), newest first",
    responses={200: OutputList},
    errors=(404,),
    tag="outputs",
)
def index(job_id: int) -> Response:
    owned_job(job_id)
    items = [view(o) for o in jobs.list_outputs(services().db, job_id)]
    return reply(OutputList(outputs=items))


@operation(
    bp,
    "GET",
    OUTPUT,
    summary="An output's status, progress and result",
    responses={200: OutputOut},
    errors=(404,),
    tag="outputs",
)
def show(output_id: int) -> Response:
    return reply(view(owned_output(output_id)))


@operation(
    bp,
    "POST",
    OUTPUT + "/cancel",
    summary="Cancel a queued or running output",
    responses={202: OutputOut},
    errors=(404, 409),
    tag="outputs",
)
def cancel(output_id: int) -> Response:
    """A queued output is cancelled at once; a running one is stopped within a second or two."""
    owned_output(output_id)
    try:
        output = jobs.cancel_output(services().db, output_id)
    except jobs.InvalidTransition as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return reply(view(output), 202)


@operation(
    bp,
    "GET",
    OUTPUT + "/download",
    summary="Download an output's file",
    responses={200: BINARY},
    errors=(404, 409),
    tag="outputs",
)
def download(output_id: int) -> Any:
    """The file an output made (409 until it has succeeded); `X-Checksum-SHA256` carries
    its sha256. From an `s3://` store the API streams it, or redirects to a presigned URL."""
    output = owned_output(output_id)
    if output.status != JobStatus.SUCCEEDED or output.uri is None:
        raise ApiError(409, "conflict", f"output {output_id} is {output.status}, not succeeded")
    missing = ApiError(404, "not_found", f"output {output_id}'s file is missing")
    filename = output.filename or f"output-{output_id}"
    mimetype = output.content_type or BINARY
    path = services().store.local_path(output.uri)
    response: BaseResponse
    if path is not None:
        if not path.is_file():
            raise missing
        response = send_file(path, mimetype=mimetype, as_attachment=True, download_name=filename)
    else:
        response = store_download(output.uri, filename, output.bytes or 0, missing)
        response.mimetype = mimetype
    response.headers["X-Checksum-SHA256"] = output.sha256 or ""
    return response
