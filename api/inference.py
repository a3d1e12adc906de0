"""/api/v1/jobs/<id>/predict, /generate and /translate: answers from the job's best checkpoint.

torch is imported on the first prediction only; each checkpoint is loaded once per process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Blueprint, Response

from api import offload, services
from api.auth import require_principal
from api.errors import ApiError
from api.http import JOB, json_body, owned_job, reply
from api.inference_schemas import (
    GenerateRequest,
    GenerateResponse,
    PredictRequest,
    PredictResponse,
    TranslateRequest,
    TranslateResponse,
)
from api.openapi import API_PREFIX, operation
from shared import jobs
from shared.hub import registry as hub
from shared.hub.cache import checkout
from shared.infra.cache import ChecksumMismatch, cache_for, readable_file
from shared.infra.models import Job
from shared.infra.storage import ArtifactMissing
from shared.protocol import TrainerFailure
from shared.registry import InferenceInputError, tasks_serving

if TYPE_CHECKING:
    from shared.zoo.predictor import Predictor

bp = Blueprint("inference", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


def predictor_for(job: Job, route: str) -> tuple[int, Predictor]:
    """The job's best checkpoint, loaded, if the job's task answers `route`."""
    tasks = tasks_serving(route)
    if job.task not in tasks:
        raise ApiError(
            409, "conflict", f"job {job.id} is a {job.task} job; this needs {' or '.join(tasks)}"
        )
    svc = services()
    ckpt = jobs.best_checkpoint(svc.db, job.id)
    if ckpt is None or not svc.store.exists(ckpt.uri):
        raise ApiError(409, "conflict", f"job {job.id} has no checkpoint yet")
    cache = cache_for(svc.settings)
    backbone = None
    if job.base_model_id is not None or job.model_type == "pretrained":
        base = hub.get_model(svc.db, job.base_model_id) if job.base_model_id else None
        if base is None:
            raise ApiError(409, "conflict", f"job {job.id}'s base model was deleted")
        limit = svc.settings.max_model_bytes
        backbone = functools.partial(checkout, svc.store, base.uri, base.sha256, cache, limit)
    checkpoint = functools.partial(readable_file, svc.store, cache, ckpt.uri, ckpt.sha256)
    try:
        return ckpt.id, offload.run(_load_predictor, checkpoint, ckpt.sha256, backbone)
    except (hub.ModelError, TrainerFailure, ChecksumMismatch) as exc:  # it cannot serve now
        raise ApiError(409, "conflict", f"job {job.id} cannot serve predictions: {exc}") from None
    except ArtifactMissing:
        raise ApiError(409, "conflict", f"job {job.id}'s checkpoint is missing") from None


def _load_predictor(
    checkpoint: Callable[[], Path], sha256: str, backbone: Callable[[], Path] | None
) -> Predictor:
    from shared.zoo.predictor import load_predictor  # torch, on first use only

    # The checkpoint (from a remote store) and a base model are kept once per hash in this
    # machine's cache.
    return load_predictor(str(checkpoint()), sha256, str(backbone()) if backbone else None)


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
    checkpoint_id, predictor = predictor_for(job, "predict")
    try:
        predictions = offload.run(predictor.predict, request_body.texts, request_body.tokens)
    except InferenceInputError as exc:
        raise ApiError(
            422,
            "validation_error",
            f"{job.task} takes {exc.path}",
            [{"path": exc.path, "message": str(exc), "type": "missing"}],
        ) from None
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
    checkpoint_id, predictor = predictor_for(job, "generate")
    text = offload.run(
        predictor.generate,
        params.prompt,
        params.length,
        params.temperature,
        params.top_k,
        params.seed,
    )
    return reply(GenerateResponse(checkpoint_id=checkpoint_id, prompt=params.prompt, text=text))


@operation(
    bp,
    "POST",
    JOB + "/translate",
    summary="Translate texts with a seq2seq model",
    body=TranslateRequest,
    responses={200: TranslateResponse},
    errors=(400, 404, 409, 413, 415, 422),
    tag="inference",
)
def translate(job_id: int) -> Response:
    """Beam-search translations of `texts` from the job's best checkpoint, each with its
    score (the log-probability divided by the length penalty); unset decoding settings are
    the job's `spec.decoding`."""
    params = TranslateRequest.model_validate(json_body())
    job = owned_job(job_id)
    checkpoint_id, predictor = predictor_for(job, "translate")
    beam_size = params.beam_size or predictor.spec.decoding.beam_size
    answers = offload.run(
        predictor.translate, params.texts, beam_size, params.length_penalty, params.max_length
    )
    translations = [
        {"text": text, "translation": answer["translation"], "score": answer["score"]}
        for text, answer in zip(params.texts, answers, strict=True)
    ]
    return reply(
        TranslateResponse.model_validate(
            {"checkpoint_id": checkpoint_id, "beam_size": beam_size, "translations": translations}
        )
    )
