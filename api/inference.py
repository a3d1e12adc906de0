"""/api/v1/jobs/<id>/predict and /generate: answers from the job's best checkpoint.

torch is imported on the first prediction only; each checkpoint is loaded once per process.
"""

from __future__ import annotations

from flask import Blueprint, Response

from api import services
from api.auth import require_principal
from api.errors import ApiError
from api.jobs import JOB, json_body, owned_job, reply
from api.openapi import API_PREFIX, operation
from api.schemas import GenerateRequest, GenerateResponse, PredictRequest, PredictResponse
from shared import jobs
from shared.infra.models import Job

bp = Blueprint("inference", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


def predictor_for(job: Job, tasks: tuple[str, ...]) -> tuple[int, object]:
    if job.task not in tasks:
        raise ApiError(
            409, "conflict", f"job {job.id} is a {job.task} job; this needs {' or '.join(tasks)}"
        )
    svc = services()
    ckpt = jobs.best_checkpoint(svc.db, job.id)
    if ckpt is None or not svc.store.exists(ckpt.uri):
        raise ApiError(409, "conflict", f"job {job.id} has no checkpoint yet")
    from api.predictor import load_predictor  # torch, on first use only

    return ckpt.id, load_predictor(str(svc.store.path(ckpt.uri)), ckpt.sha256)


@operation(
    bp,
    "POST",
    JOB + "/predict",
    summary="Classify texts or tag sentences",
    body=PredictRequest,
    responses={200: PredictResponse},
    errors=(400, 404, 409, 413, 415, 422),
    tag="inference",
)
def predict(job_id: int) -> Response:
    """Labels with probabilities (classification) or a tag per token (tagging), from the
    job's best checkpoint."""
    request_body = PredictRequest.model_validate(json_body())
    job = owned_job(job_id)
    checkpoint_id, predictor = predictor_for(job, ("classification", "tagging"))
    if job.task == "classification":
        if request_body.texts is None:
            raise ApiError(
                422,
                "validation_error",
                "classification takes texts",
                [{"path": "texts", "message": "required for classification", "type": "missing"}],
            )
        predictions = predictor.classify(request_body.texts)  # type: ignore[attr-defined]
    else:
        sentences = request_body.tokens or [t.split() for t in request_body.texts or []]
        predictions = predictor.tag(sentences)  # type: ignore[attr-defined]
    return reply(
        PredictResponse.model_validate({"checkpoint_id": checkpoint_id, "predictions": predictions})
    )


@operation(
    bp,
    "POST",
    JOB + "/generate",
    summary="Sample text from a language model",
    body=GenerateRequest,
    responses={200: GenerateResponse},
    errors=(400, 404, 409, 413, 415, 422),
    tag="inference",
)
def generate(job_id: int) -> Response:
    """Continues `prompt` with `length` tokens sampled at `temperature` among the `top_k` likeliest."""
    params = GenerateRequest.model_validate(json_body())
    job = owned_job(job_id)
    checkpoint_id, predictor = predictor_for(job, ("language_modeling",))
    text = predictor.generate(
        params.prompt, params.length, params.temperature, params.top_k, params.seed
    )  # type: ignore[attr-defined]
    return reply(GenerateResponse(checkpoint_id=checkpoint_id, prompt=params.prompt, text=text))
