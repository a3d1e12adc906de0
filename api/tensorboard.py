"""GET /api/v1/jobs/<id>/tensorboard: a job's TensorBoard event files as one .tar.gz."""

from __future__ import annotations

import io
import tarfile

from flask import Blueprint, Response

from api import services
from api.auth import require_principal
from api.errors import ApiError
from api.http import JOB, owned_job
from api.openapi import API_PREFIX, operation

bp = Blueprint("tensorboard", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


def event_archive(job_id: int) -> bytes:
    """Every attempt's event files under `job-<id>/attempt-<n>/`, gzipped."""
    folder = services().store.path(f"jobs/{job_id}/tensorboard")
    files = sorted(folder.glob("attempt-*/events.out.tfevents.*")) if folder.is_dir() else []
    if not files:
        raise ApiError(
            404,
            "not_found",
            f"job {job_id} has no TensorBoard events (submit with training.tensorboard: true)",
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in files:
            archive.add(path, arcname=f"job-{job_id}/{path.relative_to(folder)}")
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
