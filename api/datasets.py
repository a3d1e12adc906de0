"""/api/v1/datasets: upload (multipart), list, detail with statistics, delete."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from api import services
from api.auth import authorize, current_principal, require_principal
from api.errors import ApiError
from api.http import query, reply
from api.openapi import API_PREFIX, id_rule, operation
from api.schemas import DatasetList, DatasetOut, ListDatasetsQuery
from shared.data import datasets as registry
from shared.data.formats import DatasetFormatError
from shared.infra.models import Dataset
from shared.jobs import Owner, owners

bp = Blueprint("datasets", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
DATASET = "/datasets/" + id_rule("dataset_id")


def view(dataset: Dataset, owner: str | None) -> DatasetOut:
    fields: dict[str, Any] = {
        k: getattr(dataset, k) for k in DatasetOut.model_fields if hasattr(dataset, k)
    }
    fields.update(
        owner=owner,
        reference=f"dataset:{dataset.id}",
        url=url_for("datasets.show", dataset_id=dataset.id),
    )
    return DatasetOut.model_validate(fields)


def owned_dataset(dataset_id: int) -> Dataset:
    dataset = registry.get_dataset(services().db, dataset_id)
    if dataset is None:
        raise ApiError(404, "not_found", f"dataset {dataset_id} not found")
    authorize(dataset.owner_id, f"dataset {dataset_id}")
    return dataset


@operation(
    bp,
    "POST",
    "/datasets",
    summary="Upload a dataset file",
    form=registry.DatasetUpload,
    responses={201: DatasetOut, 200: DatasetOut},
    errors=(400, 413, 415, 422),
    tag="datasets",
)
def upload() -> Response:
    """Validates and parses the whole file before anything is stored. tsv, csv and jsonl
    name their columns: text_column (and label_column), or source_column and target_column
    for seq2seq pairs. Re-uploading the same bytes with the same options returns the
    existing dataset (200)."""
    svc = services()
    limit = svc.settings.max_dataset_bytes
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "upload the file as multipart/form-data (field `file`)"
        )
    request.max_content_length = limit + (64 << 10)  # the file plus the form fields
    try:
        upload_file = request.files.get("file")
        form = request.form.to_dict()
    except RequestEntityTooLarge:
        raise ApiError(
            413, "request_entity_too_large", f"the upload is larger than the {limit:,}-byte limit"
        ) from None
    if upload_file is None:
        raise ApiError(
            422,
            "validation_error",
            "the multipart field `file` is required",
            [{"path": "file", "message": "required", "type": "missing"}],
        )
    options = registry.DatasetUpload.model_validate(form)
    filename = upload_file.filename or ""
    if options.name is None:
        try:
            registry.filename_as_name(filename)
        except registry.DatasetError as exc:
            raise ApiError(
                422,
                "validation_error",
                "invalid dataset options: name",
                [{"path": "name", "message": exc.message, "type": "file_name"}],
            ) from None
    data = upload_file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413, "request_entity_too_large", f"the file is larger than the {limit:,}-byte limit"
        )
    principal = current_principal()
    try:
        dataset, created = registry.create_dataset(
            svc.db, svc.store, principal.user_id, options, filename, data
        )
    except DatasetFormatError as exc:
        raise ApiError(
            400,
            "invalid_dataset",
            str(exc),
            [{"path": exc.field or "file", "message": str(exc), "type": "dataset_format"}],
        ) from None
    return reply(
        view(dataset, principal.name),
        201 if created else 200,
        {"Location": url_for(".show", dataset_id=dataset.id)},
    )


@operation(
    bp,
    "GET",
    "/datasets",
    summary="List datasets, newest first",
    query=ListDatasetsQuery,
    responses={200: DatasetList},
    errors=(400,),
    tag="datasets",
)
def index() -> Response:
    """Your datasets (an admin sees everyone's)."""
    params = query(ListDatasetsQuery)
    principal = current_principal()
    rows, cursor = registry.list_datasets(
        services().db,
        None if principal.is_admin else principal.user_id,
        params.limit,
        params.cursor,
    )
    found = owners(services().db, user_ids={d.owner_id for d in rows})
    items = [view(d, found.get(d.owner_id, Owner()).name) for d in rows]
    return reply(DatasetList(datasets=items, next_cursor=cursor))


@operation(
    bp,
    "GET",
    DATASET,
    summary="One dataset with its statistics",
    responses={200: DatasetOut},
    errors=(404,),
    tag="datasets",
)
def show(dataset_id: int) -> Response:
    dataset = owned_dataset(dataset_id)
    owner = owners(services().db, user_ids={dataset.owner_id}).get(dataset.owner_id, Owner())
    return reply(view(dataset, owner.name))


@operation(
    bp,
    "DELETE",
    DATASET,
    summary="Delete a dataset no queued or running job uses",
    responses={204: None},
    errors=(404, 409),
    tag="datasets",
)
def delete(dataset_id: int) -> Response:
    owned_dataset(dataset_id)
    svc = services()
    try:
        registry.delete_dataset(svc.db, svc.store, dataset_id)
    except registry.DatasetInUse as exc:
        raise ApiError(409, "conflict", exc.message) from None
    return Response(status=204)
