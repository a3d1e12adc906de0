"""GET /api/v1/jobs/<id>/tensorboard: a job's TensorBoard event files as one .tar.gz."""

from __future__ import annotations

import io
import re
import tarfile

from flask import Blueprint, Response

from api import services
from api.auth import require_principal
from api.errors import ApiError
from api.http import JOB, owned_job
from api.openapi import API_PREFIX, operation
from shared.infra.storage import ArtifactMissing

bp = Blueprint("tensorboard", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)

# An attempt's event file, relative to the job's tensorboard folder.
EVENT_FILE = re.compile(r"attempt-\d+/events\.out\.tfevents\.[^/]+")


def event_archive(job_id: int) -> bytes:
    """Every attempt's event files under `job-<id>/attempt-<n>/`, gzipped."""
    store = services().store
    folder = f"jobs/{job_id}/tensorboard/"
    files = [info for info in store.list(folder) if EVENT_FILE.fullmatch(info.key[len(folder) :])]
    if not files:
        raise ApiError(
            404,
            "not_found",
            f"job {job_id} has no TensorBoard events (submit with training.tensorboard: true)",
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in files:
            try:
                data = store.get_bytes(info.key)
            except ArtifactMissing:  # the job was deleted meanwhile
                continue
            member = tarfile.TarInfo(f"job-{job_id}/{info.key[len(folder) :]}")
            member.size, member.mtime, member.mode = len(data), int(info.modified), 0o644
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@operation(
    bp,
    "GET",
    JOB + "/tensorboard",
    summary="Download the job's TensorBoard event files (.tar.gz)",
    responses={200: "application/gzip"},
    errors=(404,),
)
def tensorboard(job_id: int) -> Response:
    """Event files of every attempt (`attempt-<n>/events.out.tfevents.*`), for jobs submitted
    with `training.tensorboard: true`. Unpack and run `tensorboard --logdir .`."""
    owned_job(job_id)
    return Response(
        event_archive(job_id),
        mimetype="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-tensorboard.tar.gz"'},
    )
