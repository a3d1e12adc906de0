"""GET /api/v1/jobs/<id>/stream: server-sent events of a job's metrics and status.

The stream subscribes to the trainer's Redis channel `seqtrain:job:<id>:metrics` before its
first byte, so a client that backfills from SQL on every (re)connect misses nothing. Each
stream lives `STREAM_SECONDS` at most; EventSource reconnects by itself.

What an open stream costs: under gunicorn's gevent workers (cli.services.api_command) a
greenlet and a Redis pub/sub connection, never a thread. Its status comes from the
process's `StatusBoard`, which reads every job the process streams in two SQL queries a
second, however many streams watch. Each user holds at most SEQTRAIN_MAX_STREAMS_PER_USER
streams at once across every API process (`StreamSlots`, counted in Redis with expiry, so
the slots of a process that died free themselves); one more is a 429 with Retry-After, and
the job page polls meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app
from sqlalchemy import select

from api import Services, services
from api.auth import current_principal, require_principal
from api.errors import ApiError
from api.http import JOB, owned_job
from api.openapi import API_PREFIX, operation
from api.schemas import JobProgress, StreamEvent
from shared import jobs
from shared.infra.db import Database
from shared.infra.models import TERMINAL_STATUSES, Job
from shared.infra.queue import redis_client
from shared.jobs.progress import job_progress
from shared.protocol import metrics_channel

bp = Blueprint("stream", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
log = logging.getLogger("seqtrain.api")

STREAM_SECONDS = 60.0  # then the client reconnects
# A comment line keeps proxies from closing an idle stream, renews the stream's slot and
# finds a client that went away (the write fails), so its slot frees within two of these.
HEARTBEAT_SECONDS = 5.0
STATUS_POLL_SECONDS = 1.0
RECONNECT_MS = 2000
SLOT_SECONDS = 30.0  # a slot not renewed this long is free again (its process died)
RETRY_AFTER_SECONDS = 10  # told to a refused client: a slot frees within two heartbeats
EXTENSION = "seqtrain.streams"

# KEYS[1]: the user's sorted set of slots, scored by expiry; ARGV: slot, cap, seconds.
# Redis's clock, so that API hosts whose clocks differ agree.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


def slots_key(user_id: int) -> str:
    return f"seqtrain:streams:user:{user_id}"


class StreamSlots:
    """Open streams per user, counted across API processes in Redis. A slot lives `seconds`
    unless renewed; without Redis each process counts its own."""

    def __init__(self, redis_url: str, seconds: float = SLOT_SECONDS) -> None:
        self.seconds = seconds
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)
        self._lock = threading.Lock()
        self._local: dict[int, set[str]] = {}

    def acquire(self, user_id: int, cap: int) -> str | None:
        """A new slot's id, or None when the user holds `cap` already."""
        if cap <= 0:
            return None
        slot = uuid.uuid4().hex
        try:
            taken = self._acquire(keys=[slots_key(user_id)], args=[slot, cap, self.seconds])
        except redis.RedisError as exc:
            log.warning("stream slots counted in this process (%s)", type(exc).__name__)
            with self._lock:
                held = self._local.setdefault(user_id, set())
                if len(held) >= cap:
                    return None
                held.add(slot)
            return slot
        return slot if taken else None

    def renew(self, user_id: int, slot: str) -> None:
        # On a Redis error: renewed at the next heartbeat, or counted in process meanwhile.
        with contextlib.suppress(redis.RedisError):
            self._renew(keys=[slots_key(user_id)], args=[slot, self.seconds])

    def release(self, user_id: int, slot: str) -> None:
        with self._lock:
            held = self._local.get(user_id)
            if held is not None and slot in held:
                held.discard(slot)
                return
        with contextlib.suppress(redis.RedisError):  # else it expires within `seconds`
            self.redis.zrem(slots_key(user_id), slot)

    def count(self, user_id: int) -> int:
        """Slots the user holds now (those expired excluded)."""
        now = self.redis.time()
        return int(self.redis.zcount(slots_key(user_id), now[0] + now[1] / 1e6, "+inf"))


def _progress_of(job: Job, latest: dict[str, dict[str, Any]]) -> JobProgress:
    fraction, eta = job_progress(job, latest)
    fields = {name: getattr(job, name) for name in JobProgress.model_fields if hasattr(job, name)}
    return JobProgress.model_validate({**fields, "progress": fraction, "eta_seconds": eta})


def job_status(db: Any, job_id: int) -> JobProgress:
    job = jobs.get_job(db, job_id)
    return _progress_of(job, jobs.latest_metrics(db, [job_id])[job_id])


def job_statuses(db: Database, job_ids: Sequence[int]) -> dict[int, JobProgress]:
    """The status of each job, in two queries whatever their number."""
    with db.session() as session:
        found = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))
    latest = jobs.latest_metrics(db, [job.id for job in found])
    return {job.id: _progress_of(job, latest[job.id]) for job in found}


class StatusBoard:
    """The latest status of every job this process streams. The first stream to ask once
    the figures are `period` s old reads them all again, in one go; the others meanwhile
    answer from what was read (no stream waits for another's query)."""

    def __init__(self, db: Database, period: float = STATUS_POLL_SECONDS) -> None:
        self.db, self.period = db, period
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        self._watchers: dict[int, int] = {}
        self._latest: dict[int, JobProgress] = {}
        self._read_at = float("-inf")

    def watch(self, job_id: int, current: JobProgress) -> None:
        with self._lock:
            self._watchers[job_id] = self._watchers.get(job_id, 0) + 1
            self._latest[job_id] = current

    def unwatch(self, job_id: int) -> None:
        with self._lock:
            left = self._watchers.pop(job_id, 0) - 1
            if left > 0:
                self._watchers[job_id] = left
            else:
                self._latest.pop(job_id, None)

    def watched(self) -> int:
        return len(self._watchers)

    def latest(self, job_id: int) -> JobProgress | None:
        started = time.monotonic()
        if started - self._read_at >= self.period and self._reading.acquire(blocking=False):
            try:
                if started - self._read_at >= self.period:
                    self._read(started)
            finally:
                self._reading.release()
        return self._latest.get(job_id)

    def _read(self, started: float) -> None:
        self._read_at = started
        with self._lock:
            job_ids = list(self._watchers)
        try:
            found = job_statuses(self.db, job_ids) if job_ids else {}
        except Exception as exc:  # the database is away: streams keep the last status
            log.warning("stream statuses not read (%s)", type(exc).__name__)
            return
        with self._lock:
            for job_id, status in found.items():
                if job_id in self._watchers:
                    self._latest[job_id] = status


class Streams:
    """What the stream route keeps per app: the slot counter and the status board."""

    def __init__(self, svc: Services) -> None:
        self.slots = StreamSlots(svc.settings.redis_url)
        self.board = StatusBoard(svc.db)


@bp.record_once
def _setup(state: Any) -> None:
    app: Flask = state.app
    app.extensions[EXTENSION] = Streams(app.extensions["seqtrain"])


def sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def _subscribe(client: Any, job_id: int) -> Any:
    try:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(metrics_channel(job_id))
        return pubsub
    except redis.RedisError as exc:  # metrics then come from SQL alone
        log.warning("job %s: stream without pub/sub (%s)", job_id, type(exc).__name__)
        return None


def metric_events(
    svc: Services,
    board: StatusBoard,
    job_id: int,
    lifetime: float,
    heartbeat: float = HEARTBEAT_SECONDS,
    on_heartbeat: Callable[[], None] | None = None,
) -> Iterator[str]:
    """`status` (on change), `metrics` (each batch the trainer publishes) and `end` (the job
    finished) events, and a comment every `heartbeat` s, for at most `lifetime` s."""
    pubsub, watching = None, False
    client = redis_client(svc.settings.redis_url, timeout=STATUS_POLL_SECONDS + 1)
    try:
        current = job_status(svc.db, job_id)
        if current.status == "running":  # subscribe before the first byte: see the docstring
            pubsub = _subscribe(client, job_id)
            board.watch(job_id, current)
            watching = True
        yield f"retry: {RECONNECT_MS}\n\n"
        yield sse("status", current.model_dump_json())
        now = time.monotonic()
        deadline, next_poll, next_beat = now + lifetime, now, now + heartbeat
        while current.status == "running" and now < deadline:
            yield from _relay(pubsub, min(STATUS_POLL_SECONDS, deadline - now, heartbeat))
            now = time.monotonic()
            if now >= next_poll:
                latest = board.latest(job_id)
                if latest is not None and latest != current:
                    current = latest
                    yield sse("status", current.model_dump_json())
                next_poll = now + STATUS_POLL_SECONDS
            if now >= next_beat:
                yield ": keep-alive\n\n"
                if on_heartbeat is not None:
                    on_heartbeat()
                next_beat = now + heartbeat
        if current.status in TERMINAL_STATUSES:
            yield sse("end", json.dumps({"status": current.status}))
    finally:
        if watching:
            board.unwatch(job_id)
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


def _too_many(cap: int) -> ApiError:
    return ApiError(
        429,
        "too_many_streams",
        f"{cap} live streams are open for this user already; retry in {RETRY_AFTER_SECONDS} s"
        " (the job's detail and /metrics answer meanwhile)",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@operation(
    bp,
    "GET",
    JOB + "/stream",
    summary="Server-sent events: live metrics and status",
    responses={200: ("text/event-stream", StreamEvent)},
    errors=(404, 429),
)
def stream(job_id: int) -> Response:
    """`text/event-stream` with `status` events (a JobProgress, on change), `metrics` events
    (the rows the trainer writes: step, epoch, split, name, value) and `end` when the job
    finishes. A running job's stream lasts 60 s, with a comment every 5 s, then the client
    reconnects; any other job's stream closes after its status. Fetch
    /jobs/<id>/metrics on each (re)connect to fill the history. A user holds at most
    SEQTRAIN_MAX_STREAMS_PER_USER streams at once; one more is a 429 with Retry-After."""
    owned_job(job_id)
    svc, config = services(), current_app.config
    streams: Streams = current_app.extensions[EXTENSION]
    cap = int(config.get("SEQTRAIN_MAX_STREAMS_PER_USER", svc.settings.max_streams_per_user))
    user_id = current_principal().user_id
    slot = streams.slots.acquire(user_id, cap)
    if slot is None:
        raise _too_many(cap)
    try:
        events = metric_events(
            svc,
            streams.board,
            job_id,
            float(config.get("SEQTRAIN_STREAM_SECONDS", STREAM_SECONDS)),
            float(config.get("SEQTRAIN_STREAM_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)),
            lambda: streams.slots.renew(user_id, slot),
        )
        response = Response(events, mimetype="text/event-stream")
    except BaseException:
        streams.slots.release(user_id, slot)
        raise
    # Closing the response (the stream ended, or the client went away) frees the slot,
    # even when the generator never started.
    response.call_on_close(lambda: streams.slots.release(user_id, slot))
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
