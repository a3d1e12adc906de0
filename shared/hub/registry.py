"""The model registry: uploads of pretrained base models, listing, sharing, deletion, and
references from job specs.

An upload is an archive of a Hugging Face model directory, inspected before anything is
stored (shared.hub.archive) and kept once per content hash (`models/<sha256>` in the
artifact store); re-uploading the same bytes returns the model already there. A user sees
their own models and the ones an admin shared with everyone.

A job spec names a model as `model:<id>` or by name: the caller's newest model of that
name, else the newest shared one. The API resolves it at submit and pins the id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exists, or_, select

from shared.hub import archive
from shared.infra.db import Database
from shared.infra.listing import (
    ACTIVE_STATUSES,
    NAME_MAX,
    NAME_PATTERN,
    invalid_reference,
    newest_first,
    parse_reference_id,
)
from shared.infra.models import Job, PretrainedModel
from shared.infra.storage import ArtifactStore, file_digest
from shared.protocol import TrainerFailure

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


class ModelError(TrainerFailure, ValueError):
    """A model cannot be used: `field` names the spec field or upload field to fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


class ModelInUse(ModelError):
    pass


class ModelUpload(BaseModel):
    """Upload fields besides `file`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None,
        min_length=1,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
        description="Name to refer to it by (default: the file's name without .zip, .tar.gz "
        "or .tgz, which must then obey the same rules).",
    )


def filename_as_name(filename: str) -> str | None:
    """An uploaded file's name, without its archive suffix, as the model's default name;
    None when there is no file name; a ModelError (field `name`) when it breaks the rules."""
    stem = filename
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if not stem:
        return None
    if len(stem) > NAME_MAX or not re.fullmatch(NAME_PATTERN, stem):
        raise ModelError(
            f"the file's name ({len(stem)} characters) cannot name the model: a name is "
            f"1-{NAME_MAX} printable characters without ':'; give the `name` field",
            "name",
        )
    return stem


def create_model(
    db: Database,
    store: ArtifactStore,
    owner_id: int,
    name: str | None,
    filename: str,
    staged: Path,
    max_bytes: int,
) -> tuple[PretrainedModel, bool]:
    """Inspect the archive at `staged`, then store it: (model, created). `staged` is
    consumed: moved into the store, or deleted. A ModelArchiveError (naming the member)
    leaves nothing behind but `staged`, which the caller removes.

    Re-uploading the same bytes returns the owner's existing model (created False).
    """
    if name is not None and (len(name) > NAME_MAX or not re.fullmatch(NAME_PATTERN, name)):
        raise ModelError(f"a model's name is 1-{NAME_MAX} printable characters without ':'", "name")
    chosen = name or filename_as_name(filename)
    inspected = archive.inspect(staged, max_bytes)
    size, digest = file_digest(staged)
    with db.session() as session:
        existing = session.scalars(
            select(PretrainedModel)
            .where(PretrainedModel.owner_id == owner_id, PretrainedModel.sha256 == digest)
            .order_by(PretrainedModel.id.desc())
            .limit(1)
        ).first()
    if existing is not None:
        staged.unlink(missing_ok=True)
        return existing, False
    uri = f"models/{digest}"
    _store_archive(store, staged, uri)
    with db.session() as session:
        model = PretrainedModel(
            owner_id=owner_id,
            name=chosen or digest[:12],
            model_type=inspected.model_type,
            architectures=inspected.architectures,
            parameters=inspected.parameters,
            dtype=inspected.dtype[:16],
            summary=inspected.summary,
            files=inspected.files,
            format=inspected.format,
            uri=uri,
            sha256=digest,
            bytes=size,
            unpacked_bytes=inspected.unpacked_bytes,
        )
        session.add(model)
        session.flush()
    return model, True


def _store_archive(store: ArtifactStore, staged: Path, uri: str) -> None:
    """Publish `staged` under `uri`, once per content hash: the same bytes are stored once.
    `commit` consumes the file wherever it lies (a directory store moves it beside its place
    and renames it; a bucket uploads and verifies it)."""
    if store.exists(uri):
        staged.unlink(missing_ok=True)
        return
    store.commit(staged, uri)


def list_models(
    db: Database, viewer_id: int | None, limit: int = 100, before_id: int | None = None
) -> tuple[list[PretrainedModel], int | None]:
    """Newest first: the viewer's models and the shared ones (every model for None, an
    admin); the cursor of the next page, or None."""
    query = select(PretrainedModel)
    if viewer_id is not None:
        query = query.where(
            or_(PretrainedModel.owner_id == viewer_id, PretrainedModel.shared.is_(True))
        )
    return newest_first(db, query, PretrainedModel.id, limit, before_id)


def get_model(db: Database, model_id: int) -> PretrainedModel | None:
    with db.session() as session:
        return session.get(PretrainedModel, model_id)


def visible(model: PretrainedModel, user_id: int, is_admin: bool) -> bool:
    """Whether a user may see and use a model: their own, a shared one, or any for an admin."""
    return is_admin or model.shared or model.owner_id == user_id


def delete_model(
    db: Database,
    store: ArtifactStore,
    model_id: int,
    viewer_id: int | None = None,
    force: bool = False,
) -> None:
    """Delete a model no queued or running job uses; its archive goes with the last model
    of that content hash. Without `force`, a model that finished jobs were fine-tuned from
    is kept too: their checkpoints need it to serve predictions. Messages name only the
    jobs of `viewer_id` (None: an admin, who sees every job)."""
    with db.session() as session:
        # The row lock orders this delete with a submission that names the model: whichever
        # commits first, the other sees it (the in-use check, or the job's foreign key).
        model = session.get(PretrainedModel, model_id, with_for_update=True)
        if model is None:
            return
        rows = session.execute(
            select(Job.id, Job.owner_id, Job.status).where(Job.base_model_id == model_id)
        ).all()
        active = [r for r in rows if r.status in ACTIVE_STATUSES]
        if active:
            raise ModelInUse(
                f"model {model_id} is used by {_jobs_named(active, viewer_id)} (queued or "
                "running); cancel or wait for them first"
            )
        if rows and not force:
            raise ModelInUse(
                f"model {model_id} is the base of {_jobs_named(rows, viewer_id)}, whose "
                "checkpoints need it to serve predictions; delete with force to delete it anyway"
            )
        uri, sha = model.uri, model.sha256
        session.delete(model)
        session.flush()
        shared_file = session.scalar(select(exists().where(PretrainedModel.sha256 == sha)))
    if not shared_file:
        store.delete(uri)


def _jobs_named(rows: Sequence[Any], viewer_id: int | None) -> str:
    """A count of every job and the viewer's own ids, e.g. `3 jobs (yours: 12, 14)`."""
    own = sorted(r.id for r in rows if viewer_id is None or r.owner_id == viewer_id)
    count = f"{len(rows)} {'job' if len(rows) == 1 else 'jobs'}"
    if not own:
        return count
    return f"{count} ({'' if viewer_id is None else 'yours: '}{', '.join(map(str, own))})"


def set_shared(db: Database, model_id: int, shared: bool) -> PretrainedModel | None:
    """Share a model with every user, or stop sharing it; None when there is no such model."""
    with db.session() as session:
        model = session.get(PretrainedModel, model_id, with_for_update=True)
        if model is not None:
            model.shared = shared
        return model


def reference_id(reference: str, field: str) -> int:
    """The id of a `model:<id>` reference: ASCII digits, 1..2^63-1 (the column's range)."""
    number = parse_reference_id(reference, "model")
    if number is None:
        raise ModelError(invalid_reference(reference, "model"), field)
    return number


def resolve_model(
    db: Database, reference: str, owner_id: int, is_admin: bool, field: str
) -> PretrainedModel:
    """A spec's model reference -> a stored model the caller may use: `model:<id>`, or a
    name (the caller's newest model of that name, else the newest shared one)."""
    with db.session() as session:
        if reference.startswith("model:"):
            model = session.get(PretrainedModel, reference_id(reference, field))
            if model is None or not visible(model, owner_id, is_admin):
                raise ModelError(f"no model {reference[:60]!r} that you can use", field)
            return model
        newest = select(PretrainedModel).order_by(PretrainedModel.id.desc()).limit(1)
        found = (
            session.scalars(
                newest.where(
                    PretrainedModel.owner_id == owner_id, PretrainedModel.name == reference
                )
            ).first()
            or session.scalars(
                newest.where(PretrainedModel.shared.is_(True), PretrainedModel.name == reference)
            ).first()
        )
    if found is None:
        raise ModelError(
            f"no model named {reference[:200]!r} that you can use (upload it with "
            "`seqtrain models upload`, or use model:<id>)",
            field,
        )
    return found


def job_base_model(db: Database, job_id: int) -> PretrainedModel | None:
    """The pretrained model a job fine-tunes, or None (a model trained from scratch, or a
    base model deleted since)."""
    with db.session() as session:
        return session.scalars(
            select(PretrainedModel)
            .join(Job, Job.base_model_id == PretrainedModel.id)
            .where(Job.id == job_id)
        ).first()
