"""GET /api/v1/jobs/<id>/stream: server-sent events of a job's metrics and status.

The stream subscribes to the trainer's Redis channel `seqtrain:job:<id>:metrics` before its
first byte, so a client that backfills from SQL on every (re)connect misses nothing. Each
stream lives `STREAM_SECONDS` at most (a gthread worker is held meanwhile); EventSource
reconnects by itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, current_app

from api import Services, services
from api.auth import require_principal
from api.http import JOB, owned_job
from api.openapi import API_PREFIX, operation
from api.schemas import JobProgress, StreamEvent
from shared import jobs
from shared.infra.models import TERMINAL_STATUSES
from shared.infra.queue import redis_client
from shared.jobs.progress import job_progress
from shared.protocol import metrics_channel

bp = Blueprint("stream", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
log = logging.getLogger("seqtrain.api")

STREAM_SECONDS = 60.0  # then the client reconnects
HEARTBEAT_SECONDS = 15.0  # a comment line keeps proxies from closing an idle stream
STATUS_POLL_SECONDS = 1.0
RECONNECT_MS = 2000


def job_status(db: Any, job_id: int) -> JobProgress:
    job = jobs.get_job(db, job_id)
    fraction, eta = job_progress(job, jobs.latest_metrics(db, [job_id])[job_id])
    fields = {name: getattr(job, name) for name in JobProgress.model_fields if hasattr(job, name)}
    return JobProgress.model_validate({**fields, "progress": fraction, "eta_seconds": eta})


def sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def metric_events(svc: Services, job_id: int, lifetime: float) -> Iterator[str]:
    """`status` (on change), `metrics` (each batch the trainer publishes) and `end` (the job
    finished) events, and a comment every HEARTBEAT_SECONDS, for at most `lifetime` s."""
    pubsub = None
    client = redis_client(svc.settings.redis_url, timeout=STATUS_POLL_SECONDS + 1)
    try:
        current = job_status(svc.db, job_id)
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
                latest = job_status(svc.db, job_id)
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
