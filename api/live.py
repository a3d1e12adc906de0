"""Live views for the status pages: the jobs board, logs, the event timeline, a server-sent
event stream of metrics and status, retry, and the workers with their queues.

The stream subscribes to the trainer's Redis channel `seqtrain:job:<id>:metrics` before its
first byte, so a client that backfills from SQL on every (re)connect misses nothing. Each
stream lives `STREAM_SECONDS` at most (a gthread worker is held meanwhile); EventSource
reconnects by itself.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from flask import Blueprint, Response, current_app, url_for

from api import Services, services
from api.auth import current_principal, require_principal
from api.errors import ApiError
from api.jobs import JOB, owned_job, query, reply, summary
from api.openapi import API_PREFIX, operation
from api.schemas import (
    BoardQuery,
    EventList,
    EventsQuery,
    JobBoard,
    JobCreated,
    JobProgress,
    JobRow,
    LogChunk,
    LogsQuery,
    StreamEvent,
    TimelineEvent,
    WorkerList,
    WorkerOut,
)
from shared import jobs
from shared.infra.models import TERMINAL_STATUSES, Job, utcnow
from shared.infra.queue import queue_depths, redis_client
from shared.jobs.workers import list_workers
from shared.protocol import log_key, metrics_channel
from shared.spec import JobSpec

bp = Blueprint("live", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
log = logging.getLogger("seqtrain.api")

LOG_CHUNK_BYTES = 64 * 1024
STREAM_SECONDS = 60.0  # then the client reconnects
HEARTBEAT_SECONDS = 15.0  # a comment line keeps proxies from closing an idle stream
STATUS_POLL_SECONDS = 1.0
RECONNECT_MS = 2000
# The validation metric each task's chart and board show beside the loss.
TASK_METRIC = {"classification": "accuracy", "tagging": "f1", "language_modeling": "perplexity"}


# ---------------------------------------------------------------- progress


def progress(job: Job, latest: dict[str, dict[str, Any]]) -> tuple[float | None, float | None]:
    """(fraction of the planned steps done, seconds left) from the job's step and the step
    count of its finished epochs; (None, None) while a first epoch has not told the pace."""
    if job.status == "succeeded":
        return 1.0, None
    training = job.spec.get("training", {})
    epochs, max_steps = training.get("epochs") or 0, training.get("max_steps")
    planned = [float(max_steps)] if max_steps else []
    epoch_end = latest.get("val/loss") or latest.get("train/samples_per_s")
    if epoch_end and epoch_end["epoch"] > 0 and epochs:
        planned.append(epoch_end["step"] / epoch_end["epoch"] * epochs)
    if not planned or min(planned) <= 0:
        return (0.0, None) if job.step == 0 else (None, None)
    fraction = min(1.0, job.step / min(planned))
    eta = None
    if job.status == "running" and job.started_at is not None and 0 < fraction < 1:
        elapsed = (utcnow() - job.started_at).total_seconds()
        eta = max(0.0, elapsed * (1 - fraction) / fraction)
    return fraction, eta


def _value(latest: dict[str, dict[str, Any]], key: str) -> float | None:
    value = latest.get(key, {}).get("value")
    return value if value is None or math.isfinite(value) else None


def board_row(job: Job, owner: str | None, latest: dict[str, dict[str, Any]]) -> JobRow:
    fraction, eta = progress(job, latest)
    metric = TASK_METRIC.get(job.task)
    return JobRow.model_validate(
        {
            **summary(job, owner),
            "progress": fraction,
            "eta_seconds": eta,
            "latest_loss": _value(latest, "train/loss"),
            "metric_name": metric,
            "metric_value": _value(latest, f"val/{metric}") if metric else None,
            "tokens_per_s": _value(latest, "train/tokens_per_s"),
        }
    )


def job_progress(db: Any, job_id: int) -> JobProgress:
    job = jobs.get_job(db, job_id)
    fraction, eta = progress(job, jobs.latest_metrics(db, job_id))
    fields = {name: getattr(job, name) for name in JobProgress.model_fields if hasattr(job, name)}
    return JobProgress.model_validate({**fields, "progress": fraction, "eta_seconds": eta})


@operation(
    bp,
    "GET",
    "/jobs/board",
    summary="Jobs with progress and latest metrics: filter, search, sort, pages",
    query=BoardQuery,
    responses={200: JobBoard},
    errors=(400,),
)
def board() -> Response:
    """The rows of the jobs page: your jobs (an admin sees everyone's), each with its progress,
    ETA, newest loss, the task's validation metric and throughput."""
    params = query(BoardQuery)
    principal, db = current_principal(), services().db
    page, total = jobs.search_jobs(
        db,
        owner_id=None if principal.is_admin else principal.user_id,
        status=params.status,
        name_contains=params.q,
        sort=params.sort,
        offset=(params.page - 1) * params.per_page,
        limit=params.per_page,
    )
    owners = jobs.owner_names(db, {j.owner_id for j in page})
    latest = jobs.latest_metrics_for(db, [j.id for j in page])
    rows = [board_row(j, owners.get(j.owner_id), latest[j.id]) for j in page]
    pages = max(1, math.ceil(total / params.per_page))
    return reply(JobBoard(jobs=rows, total=total, page=params.page, pages=pages))


# ---------------------------------------------------------------- logs and events


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
    store = services().store
    attempt = params.attempt or job.attempt
    attempts = [n for n in range(1, job.attempt + 1) if store.exists(log_key(job_id, n))]
    ended = job.status in TERMINAL_STATUSES or (
        attempt > 0 and (attempt < job.attempt or job.status == "queued")
    )
    text, next_offset, size = "", params.offset, 0
    if attempt > 0:
        path = store.path(log_key(job_id, attempt))
        text, next_offset, size = read_log(path, params.offset, ended)
    chunk = LogChunk(
        attempt=attempt,
        attempts=attempts,
        offset=min(params.offset, size),
        next_offset=next_offset,
        text=text,
        complete=ended and next_offset >= size,
    )
    return reply(chunk)


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
    rows = jobs.events_after(services().db, job_id, params.after)
    return reply(EventList(events=[TimelineEvent.model_validate(e) for e in rows]))


# ---------------------------------------------------------------- the stream


def sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def metric_events(svc: Services, job_id: int, lifetime: float) -> Iterator[str]:
    """`status` (on change), `metrics` (each batch the trainer publishes) and `end` (the job
    finished) events, and a comment every HEARTBEAT_SECONDS, for at most `lifetime` s."""
    pubsub = None
    client = redis_client(svc.settings.redis_url, timeout=STATUS_POLL_SECONDS + 1)
    try:
        current = job_progress(svc.db, job_id)
        if current.status == "running":  # subscribe before the first byte: see the docstring
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(metrics_channel(job_id))
            except redis.RedisError as exc:  # metrics then come from SQL alone
                log.warning("job %s: stream without pub/sub (%s)", job_id, type(exc).__name__)
                pubsub = None
        yield f"retry: {RECONNECT_MS}\n\n"
        yield sse("status", current.model_dump_json())
        now = time.monotonic()
        deadline, next_poll, next_beat = now + lifetime, now, now + HEARTBEAT_SECONDS
        while current.status == "running" and now < deadline:
            yield from _relay(pubsub, min(STATUS_POLL_SECONDS, deadline - now))
            now = time.monotonic()
            if now >= next_poll:
                latest = job_progress(svc.db, job_id)
                if latest != current:
                    current = latest
                    yield sse("status", current.model_dump_json())
                next_poll = now + STATUS_POLL_SECONDS
            if now >= next_beat:
                yield ": keep-alive\n\n"
                next_beat = now + HEARTBEAT_SECONDS
        if current.status in TERMINAL_STATUSES:
            yield sse("end", json.dumps({"status": current.status}))
    finally:
        if pubsub is not None:
            pubsub.close()
        client.close()


def _relay(pubsub: Any, wait: float) -> Iterator[str]:
    """Metric batches published within `wait` seconds."""
    if pubsub is None:
        time.sleep(max(0.0, wait))
        return
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        try:
            message = pubsub.get_message(timeout=left)
        except redis.RedisError:
            time.sleep(max(0.0, end - time.monotonic()))
            return
        if message and message.get("type") == "message":
            data = message["data"]
            yield sse("metrics", data.decode() if isinstance(data, bytes) else str(data))


@operation(
    bp,
    "GET",
    JOB + "/stream",
    summary="Server-sent events: live metrics and status",
    responses={200: ("text/event-stream", StreamEvent)},
    errors=(404,),
)
def stream(job_id: int) -> Response:
    """`text/event-stream` with `status` events (a JobProgress, on change), `metrics` events
    (the rows the trainer writes: step, epoch, split, name, value) and `end` when the job
    finishes. A running job's stream lasts 60 s, with a comment every 15 s, then the client
    reconnects; any other job's stream closes after its status. Fetch
    /jobs/<id>/metrics on each (re)connect to fill the history."""
    owned_job(job_id)
    lifetime = float(current_app.config.get("SEQTRAIN_STREAM_SECONDS", STREAM_SECONDS))
    response = Response(metric_events(services(), job_id, lifetime), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


# ---------------------------------------------------------------- retry


def enqueue(svc: Services, job: Job) -> bool:
    """Put a committed job's id on its queue; False (and an event) when Redis is down."""
    try:
        svc.queue.enqueue_job(job.id, job.queue)
    except Exception as exc:
        log.warning(
            "job %s: enqueue failed (%s); it stays queued in SQL", job.id, type(exc).__name__
        )
        jobs.note_event(svc.db, job.id, "api", f"enqueue failed: {type(exc).__name__}")
        return False
    return True


@operation(
    bp,
    "POST",
    JOB + "/retry",
    summary="Run a finished job again as a new job",
    responses={201: JobCreated},
    errors=(404, 409, 422),
)
def retry(job_id: int) -> Response:
    """A new job with the same spec and the same dataset versions, owned by the caller and
    queued at once. Allowed for succeeded, failed and cancelled jobs."""
    job = owned_job(job_id)
    if job.status not in TERMINAL_STATUSES:
        raise ApiError(409, "conflict", f"job {job_id} is {job.status}; retry a finished job")
    svc, principal = services(), current_principal()
    links = {role: dataset.id for role, dataset in jobs.dataset_links(svc.db, job_id).items()}
    new = jobs.create_job(
        svc.db,
        JobSpec.model_validate(job.spec),
        owner_id=principal.user_id,
        actor=principal.name,
        datasets=links,
        estimate=job.estimate,
    )
    jobs.note_event(svc.db, new.id, principal.name, f"retry of job {job_id}")
    enqueued = enqueue(svc, new)
    location = url_for("jobs.show", job_id=new.id)
    created = JobCreated(id=new.id, status="queued", enqueued=enqueued, url=location)
    return reply(created, 201, {"Location": location})


# ---------------------------------------------------------------- workers


def worker_out(worker: Any, visible: bool) -> WorkerOut:
    fields = {
        name: getattr(worker, name) for name in WorkerOut.model_fields if hasattr(worker, name)
    }
    fields.update(
        current_job_id=worker.current_job_id if visible else None,
        busy=worker.current_job_id is not None,
        heartbeat_age_seconds=max(0.0, (utcnow() - worker.heartbeat_at).total_seconds()),
    )
    return WorkerOut.model_validate(fields)


@operation(
    bp,
    "GET",
    "/workers",
    summary="Workers with their devices, queues and current job; queue depths",
    responses={200: WorkerList},
    tag="workers",
)
def workers() -> Response:
    """Every worker that has not stopped, and the messages waiting on each queue they take
    (and the default queue). A job another user owns shows as `busy` without its id."""
    svc, principal = services(), current_principal()
    rows = list_workers(svc.db)
    owners = jobs.job_owners(svc.db, {w.current_job_id for w in rows if w.current_job_id})
    items = [
        worker_out(
            w,
            w.current_job_id is not None
            and w.current_job_id in owners
            and principal.may_see(owners[w.current_job_id]),
        )
        for w in rows
    ]
    names = {q for w in rows for q in w.queues} | {svc.settings.default_queue}
    depths: dict[str, int] | None
    try:
        with redis_client(svc.settings.redis_url, timeout=1.0) as client:
            depths = queue_depths(client, names)
    except redis.RedisError:
        depths = None
    return reply(WorkerList(workers=items, queues=depths))


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
    return Response(
        buffer.getvalue(),
        mimetype="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-tensorboard.tar.gz"'},
    )
