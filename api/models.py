"""/api/v1/models: pretrained base models: upload (multipart), list, detail, share, delete.

An upload is spooled to disk, never held whole in memory, and inspected without torch or
transformers (shared.hub.archive). Isolation as for datasets, except that a model an admin
shared is visible to every user; another user's unshared model is a 404.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request, url_for
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from api import services
from api.auth import current_principal, require_principal
from api.errors import ApiError
from api.http import json_body, query, reply
from api.openapi import API_PREFIX, id_rule, operation
from api.schemas import MAX_ID
from shared.auth import Principal
from shared.hub import registry
from shared.hub.archive import ModelArchiveError
from shared.infra.models import PretrainedModel
from shared.jobs import Owner, owners

bp = Blueprint("models", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
MODEL = "/models/" + id_rule("model_id")
FORM_SLACK = 64 << 10  # the form fields and multipart framing beside the file


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    bytes: int


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")

    id: int
    name: str
    owner: str | None
    shared: bool = Field(description="Visible to every user (an admin shares a model).")
    model_type: str = Field(description="config.json's model_type, e.g. bert, gpt2, t5.")
    architectures: list[str]
    parameters: int = Field(description="Exact, from the safetensors headers.")
    hidden_size: int | None
    layers: int | None
    heads: int | None
    vocab_size: int | None
    max_positions: int | None = Field(description="Longest input the model takes, in tokens.")
    dtype: str = Field(description="The weights' dtype, e.g. F32, BF16; mixed when several.")
    summary: dict[str, Any] = Field(description="The architecture's sizes and kind.")
    format: str = Field(description="zip or tar.gz.")
    files: list[ModelFile] = Field(description="The files a worker unpacks.")
    sha256: str
    size: int = Field(description="The archive's size in bytes.")
    unpacked_bytes: int
    created_at: datetime
    reference: str = Field(description="Use this as model.pretrained in a job spec.")
    url: str


class ModelList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelOut]
    next_cursor: int | None


class ListModelsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=500, description="Page size.")
    cursor: int | None = Field(
        None, ge=1, le=MAX_ID, description="`next_cursor` of the previous page."
    )


class ShareModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shared: bool = Field(description="Share the model with every user, or stop sharing it.")


def view(model: PretrainedModel, owner: str | None) -> ModelOut:
    summary = model.summary or {}
    return ModelOut(
        id=model.id,
        name=model.name,
        owner=owner,
        shared=model.shared,
        model_type=model.model_type,
        architectures=model.architectures,
        parameters=model.parameters,
        hidden_size=summary.get("hidden_size"),
        layers=summary.get("num_layers"),
        heads=summary.get("num_heads"),
        vocab_size=summary.get("vocab_size"),
        max_positions=summary.get("max_positions"),
        dtype=model.dtype,
        summary=summary,
        format=model.format,
        files=[ModelFile.model_validate(f) for f in model.files],
        sha256=model.sha256,
        size=model.bytes,
        unpacked_bytes=model.unpacked_bytes,
        created_at=model.created_at,
        reference=f"model:{model.id}",
        url=url_for("models.show", model_id=model.id),
    )


def owner_name(model: PretrainedModel) -> str | None:
    return owners(services().db, user_ids={model.owner_id}).get(model.owner_id, Owner()).name


def visible_model(model_id: int) -> PretrainedModel:
    """The model if the caller may see it (own, shared, or an admin), else a 404."""
    principal = current_principal()
    model = registry.get_model(services().db, model_id)
    if model is None or not registry.visible(model, principal.user_id, principal.is_admin):
        raise ApiError(404, "not_found", f"model {model_id} not found")
    return model


def short_count(value: int) -> str:
    """22713728 -> "22.7M": a parameter count at a glance."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def short_bytes(value: int) -> str:
    """83319212 -> "83.3 MB"."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def page_rows(principal: Principal, limit: int = 500) -> list[dict[str, Any]]:
    """The models page's rows: the newest models the principal can see, with their owners'
    names and sizes at a glance."""
    db = services().db
    rows, _ = registry.list_models(db, None if principal.is_admin else principal.user_id, limit)
    found = owners(db, user_ids={m.owner_id for m in rows})
    return [
        {
            "model": m,
            "owner": found.get(m.owner_id, Owner()).name,
            "parameters": short_count(m.parameters),
            "size": short_bytes(m.bytes),
        }
        for m in rows
    ]


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_entity_too_large", f"the upload is larger than the {limit:,}-byte limit"
    )


def upload_fields(limit: int) -> tuple[FileStorage, registry.ModelUpload]:
    """The multipart `file` and the form's fields: 415 unless multipart, 413 past the limit,
    422 for a missing file or a bad name."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "upload the archive as multipart/form-data (field `file`)",
        )
    request.max_content_length = limit + FORM_SLACK
    try:
        upload_file = request.files.get("file")  # werkzeug spools a large file to disk
        form = request.form.to_dict()
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    if upload_file is None:
        raise ApiError(
            422,
            "validation_error",
            "the multipart field `file` is required",
            [{"path": "file", "message": "required", "type": "missing"}],
        )
    options = registry.ModelUpload.model_validate(form)
    if options.name is None:
        try:
            registry.filename_as_name(upload_file.filename or "")
        except registry.ModelError as exc:
            raise invalid_name(exc) from None
    return upload_file, options


def invalid_name(exc: registry.ModelError) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "invalid model options: name",
        [{"path": "name", "message": exc.message, "type": "file_name"}],
    )


def spool(upload_file: FileStorage, target: Path, limit: int) -> None:
    """Copy the uploaded file to `target` in 1 MiB chunks; 413 once it passes `limit`."""
    size = 0
    with target.open("xb") as out:
        while chunk := upload_file.stream.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.write(chunk)


@operation(
    bp,
    "POST",
    "/models",
    summary="Upload a pretrained model (a Hugging Face model directory as .zip or .tar.gz)",
    form=registry.ModelUpload,
    responses={201: ModelOut, 200: ModelOut},
    errors=(400, 413, 415, 422),
    tag="models",
)
def upload() -> Response:
    """config.json, *.safetensors weights and a tokenizer; validated before anything is
    stored (a 400 names the archive member at fault). Re-uploading the same bytes returns
    the existing model (200)."""
    svc = services()
    limit = svc.settings.max_model_bytes
    upload_file, options = upload_fields(limit)
    principal = current_principal()
    staged = svc.store.staging_path("models/upload")
    try:
        spool(upload_file, staged, limit)
        model, created = registry.create_model(
            svc.db,
            svc.store,
            principal.user_id,
            options.name,
            upload_file.filename or "",
            staged,
            limit,
        )
    except ModelArchiveError as exc:
        raise ApiError(
            400,
            "invalid_model",
            str(exc),
            [{"path": "file", "message": str(exc), "type": "model_archive"}],
        ) from None
    except registry.ModelError as exc:
        raise invalid_name(exc) from None
    finally:
        staged.unlink(missing_ok=True)
    return reply(
        view(model, owner_name(model)),
        201 if created else 200,
        {"Location": url_for(".show", model_id=model.id)},
    )


@operation(
    bp,
    "GET",
    "/models",
    summary="List pretrained models, newest first",
    query=ListModelsQuery,
    responses={200: ModelList},
    errors=(400,),
    tag="models",
)
def index() -> Response:
    """Your models and the shared ones (an admin sees everyone's)."""
    params = query(ListModelsQuery)
    principal = current_principal()
    rows, cursor = registry.list_models(
        services().db,
        None if principal.is_admin else principal.user_id,
        params.limit,
        params.cursor,
    )
    found = owners(services().db, user_ids={m.owner_id for m in rows})
    items = [view(m, found.get(m.owner_id, Owner()).name) for m in rows]
    return reply(ModelList(models=items, next_cursor=cursor))


@operation(
    bp,
    "GET",
    MODEL,
    summary="One pretrained model: architecture, parameters, files",
    responses={200: ModelOut},
    errors=(404,),
    tag="models",
)
def show(model_id: int) -> Response:
    model = visible_model(model_id)
    return reply(view(model, owner_name(model)))


@operation(
    bp,
    "PATCH",
    MODEL,
    summary="Share a model with every user, or stop sharing it (admins)",
    body=ShareModel,
    responses={200: ModelOut},
    errors=(400, 404, 413, 415, 422),
    tag="models",
)
def share(model_id: int) -> Response:
    visible_model(model_id)
    if not current_principal().is_admin:
        raise ApiError(403, "forbidden", "only an admin can share a model with every user")
    body = ShareModel.model_validate(json_body())
    model = registry.set_shared(services().db, model_id, body.shared)
    if model is None:
        raise ApiError(404, "not_found", f"model {model_id} not found")
    return reply(view(model, owner_name(model)))


@operation(
    bp,
    "DELETE",
    MODEL,
    summary="Delete a model no queued or running job uses (?force=true: also one that "
    "finished jobs were fine-tuned from)",
    responses={204: None},
    errors=(404, 409),
    tag="models",
)
def delete(model_id: int) -> Response:
    model = visible_model(model_id)
    principal = current_principal()
    if not principal.may_see(model.owner_id):
        raise ApiError(403, "forbidden", f"model {model_id} belongs to another user")
    svc = services()
    force = request.args.get("force", "false").lower() in ("1", "true", "yes")
    viewer = None if principal.is_admin else principal.user_id
    try:
        registry.delete_model(svc.db, svc.store, model_id, viewer, force)
    except registry.ModelInUse as exc:
        raise ApiError(409, "conflict", exc.message) from None
    return Response(status=204)
