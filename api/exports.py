"""/api/v1/jobs/<id>/exports: a downloadable bundle of a trained job's best checkpoint (the
weights, tokenizer, labels, spec, ONNX and a model card), made on a worker as a job output."""

from __future__ import annotations

from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from api.auth import require_principal
from api.http import JOB, json_body, owned_job
from api.openapi import API_PREFIX, operation
from api.outputs import OutputOut, submit_output

bp = Blueprint("exports", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    onnx: StrictBool = Field(
        True,
        description="Add `model.onnx` (dynamic batch and length), checked against PyTorch "
        "with onnxruntime; a model without an export (type pretrained) says why in its card.",
    )


@operation(
    bp,
    "POST",
    JOB + "/exports",
    summary="Export a trained model as a bundle (weights, tokenizer, ONNX, model card)",
    body=ExportRequest,
    responses={202: OutputOut},
    errors=(400, 404, 409, 413, 415, 422),
    tag="outputs",
)
def create(job_id: int) -> Response:
    """Queues the export of the job's best checkpoint: a zip of `model.safetensors`,
    `tokenizer.json`, `labels.json`, `spec.json`, `model.onnx` and a `README.md` model card.
    Follow it at `links.self`; download it from `links.download` once it has succeeded; its
    `summary` lists the files and the ONNX graph's parity with PyTorch."""
    body = ExportRequest.model_validate(json_body())
    job = owned_job(job_id)
    return submit_output(job, "export", body.model_dump())
