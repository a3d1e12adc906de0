"""GET /api/v1/jobs/<id>/logs and /events: the trainer's output of each attempt, read in
bounded chunks by offset, and the job's status timeline."""

from __future__ import annotations

from typing import Any, cast

import redis
from flask import Blueprint, Response

from api import services
from api.auth import require_principal
from api.errors import ApiError
from api.http import JOB, owned_job, query, reply
from api.openapi import API_PREFIX, operation
from api.schemas import EventList, EventsQuery, LogChunk, LogsQuery, TimelineEvent
from shared import jobs
from shared.infra.models import TERMINAL_STATUSES, Job
from shared.infra.storage import ArtifactStore
from shared.protocol import log_key, log_stream_key

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


def read_log(
    store: ArtifactStore,
    live: redis.Redis | None,
    key: str,
    stream: str,
    archive: int | None,
    offset: int,
    final: bool,
) -> tuple[str, int, int]:
    """(text, next offset, log size so far) of at most LOG_CHUNK_BYTES from `offset` (or from
    the log's end, if `offset` is past it). The bytes the archive in the store holds (`archive`:
    its size) come from there, those past it from the live stream. A chunk never ends inside
    a UTF-8 character unless the log is `final`."""
    size = archive or 0
    data = b""
    if offset < size:
        data = store.read_range(key, offset, min(LOG_CHUNK_BYTES, size - offset))
    if live is not None and len(data) < LOG_CHUNK_BYTES and offset + len(data) >= size:
        more, end = read_stream(live, stream, offset + len(data), LOG_CHUNK_BYTES - len(data))
        data, size = data + more, max(size, end)
    start = min(offset, size)
    if not (final and start + len(data) == size):
        data = data[: _complete_utf8(data)]
    return data.decode("utf-8", "replace"), start + len(data), size


def read_stream(live: redis.Redis, stream: str, offset: int, limit: int) -> tuple[bytes, int]:
    """At most `limit` bytes of a live log stream from `offset`, and where the stream ends
    (0: no stream). Entry IDs are `{offset + 1}-0`: the entry holding `offset` is the last
    one with an ID up to `offset + 1`, and the entries after it follow on without gaps."""
    try:
        pipe = live.pipeline(transaction=False)
        pipe.xrevrange(stream, max=f"{offset + 1}-0", min="-", count=1)
        pipe.xrevrange(stream, count=1)
        holding, last = cast("tuple[Any, Any]", pipe.execute())
        if not last:
            return b"", 0
        end = _entry(last[0])[0] + len(_entry(last[0])[1])
        if not holding:  # before the stream's first entry: the archive holds it
            return b"", end
        start, data = _entry(holding[0])
        parts, expected = [data[offset - start :]], start + len(data)
        got = len(parts[0])
        if got < limit and expected < end:
            count = -(-(limit - got) // LOG_CHUNK_BYTES) + 1
            following: Any = live.xrange(stream, min=f"{expected + 1}-0", count=count)
            for entry in following:
                at, chunk = _entry(entry)
                if at != expected or got >= limit:
                    break
                parts.append(chunk)
                got, expected = got + len(chunk), expected + len(chunk)
    except redis.RedisError:  # the stream is unavailable: the archive alone serves
        return b"", 0
    return b"".join(parts)[:limit], end


def _entry(entry: Any) -> tuple[int, bytes]:
    """(offset, data) of a stream entry."""
    fields = entry[1]
    return int(fields[b"offset"]), fields[b"data"]


def log_chunk(job: Job, attempt: int, offset: int) -> LogChunk:
    """The chunk of `attempt`'s log (0: the job has not started) from `offset`. An attempt's
    log is final once the attempt is over (its archive complete), so `job` must be read
    before the log."""
    svc = services()
    store = svc.store
    archives = {info.key: info.size for info in store.list(f"jobs/{job.id}/logs/")}
    attempts = [n for n in range(1, job.attempt + 1) if log_key(job.id, n) in archives]
    ended = job.status in TERMINAL_STATUSES or (
        attempt > 0 and (attempt < job.attempt or job.status == "queued")
    )
    text, next_offset, size = "", offset, 0
    if attempt > 0:
        key = log_key(job.id, attempt)
        live = None if store.is_local else getattr(svc.limiter, "redis", None)
        stream = log_stream_key(job.id, attempt)
        text, next_offset, size = read_log(
            store, live, key, stream, archives.get(key), offset, ended
        )
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
