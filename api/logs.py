"""GET /api/v1/jobs/<id>/logs and /events: the trainer's output of each attempt, read in
bounded chunks by offset, and the job's status timeline."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response

from api import services
from api.auth import require_principal
from api.errors import ApiError
from api.http import JOB, owned_job, query, reply
from api.openapi import API_PREFIX, operation
from api.schemas import EventList, EventsQuery, LogChunk, LogsQuery, TimelineEvent
from shared import jobs
from shared.infra.models import TERMINAL_STATUSES, Job
from shared.protocol import log_key

bp = Blueprint("logs", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)

LOG_CHUNK_BYTES = 64 * 1024


def _complete_utf8(data: bytes) -> int:
    """Length of `data` without a trailing, incomplete UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        need = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return len(data) if back >= need else len(data) - back
    return len(data)


def read_log(path: Path, offset: int, final: bool) -> tuple[str, int, int]:
    """(text, next offset, file size) of at most LOG_CHUNK_BYTES from `offset`. A chunk never
    ends inside a UTF-8 character unless the log is `final`."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = min(offset, size)
            handle.seek(start)
            data = handle.read(min(LOG_CHUNK_BYTES, size - start))
    except FileNotFoundError:
        return "", 0, 0
    if not (final and start + len(data) == size):
        data = data[: _complete_utf8(data)]
    return data.decode("utf-8", "replace"), start + len(data), size


def log_chunk(job: Job, attempt: int, offset: int) -> LogChunk:
    """The chunk of `attempt`'s log (0: the job has not started) from `offset`. An attempt's
    log is final once the attempt is over, so `job` must be read before the file."""
    store = services().store
    attempts = [n for n in range(1, job.attempt + 1) if store.exists(log_key(job.id, n))]
    ended = job.status in TERMINAL_STATUSES or (
        attempt > 0 and (attempt < job.attempt or job.status == "queued")
    )
    text, next_offset, size = "", offset, 0
    if attempt > 0:
        text, next_offset, size = read_log(store.path(log_key(job.id, attempt)), offset, ended)
    return LogChunk(
        attempt=attempt,
        attempts=attempts,
        offset=min(offset, size),
        next_offset=next_offset,
        text=text,
        complete=ended and next_offset >= size,
    )


@operation(
    bp,
    "GET",
    JOB + "/logs",
    summary="The trainer's output (stdout and stderr) of one attempt, in chunks",
    query=LogsQuery,
    responses={200: LogChunk},
    errors=(400, 404),
)
def logs(job_id: int) -> Response:
    """Follow a log by passing `next_offset` back as `offset` until `complete`. Chunks are
    at most 64 KiB; the default attempt is the latest."""
    job = owned_job(job_id)  # read before the file: an ended attempt's log is final
    params = query(LogsQuery)
    if params.attempt is not None and params.attempt > job.attempt:
        raise ApiError(
            400,
            "invalid_parameter",
            f"job {job_id} has no attempt {params.attempt} (it has {job.attempt})",
            [{"path": "attempt", "message": f"at most {job.attempt}", "type": "less_than_equal"}],
        )
    return reply(log_chunk(job, params.attempt or job.attempt, params.offset))


@operation(
    bp,
    "GET",
    JOB + "/events",
    summary="The job's status timeline",
    query=EventsQuery,
    responses={200: EventList},
    errors=(400, 404),
)
def events(job_id: int) -> Response:
    """Every transition and note in order; pass the last `id` seen as `after` to poll."""
    owned_job(job_id)
    params = query(EventsQuery)
    rows = jobs.job_events(services().db, job_id, params.after)
    return reply(EventList(events=[TimelineEvent.model_validate(e) for e in rows]))
