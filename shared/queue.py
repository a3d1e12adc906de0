"""The Celery client both sides share: one configuration, tasks addressed by name.

The API enqueues with `enqueue_job(job_id, queue)` and never imports the worker's code
(nor torch). Only the job id travels; the task re-reads everything from SQL.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery

from shared.settings import Settings

RUN_JOB_TASK = "seqtrain.run_job"
# A multi-node attempt's call for one more worker: args [job id, attempt].
JOIN_JOB_TASK = "seqtrain.join_job"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings shared by the producer (API) and the consumer (worker)."""
    return {
        "broker_url": settings.redis_url,
        # JSON only: a message is never unpickled.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        # Long tasks: one message at a time per worker slot, acknowledged when done.
        "worker_prefetch_multiplier": 1,
        "task_acks_late": True,
        # Redis redelivers an unacked message after this; both sides must agree.
        # Redelivery is harmless: the claim fails and the task returns.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.default_queue,
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def make_celery(settings: Settings, name: str = "seqtrain") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


class JobQueue:
    """Producer side: puts job ids on Redis."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_celery(settings, "seqtrain-client")

    def enqueue_job(self, job_id: int, queue: str) -> None:
        # retry=False: fail fast when Redis is down; the job stays queued in SQL.
        # The task id names the job, so the reconciler can tell which jobs have a message.
        self.app.send_task(
            RUN_JOB_TASK,
            args=[job_id],
            queue=queue,
            retry=False,
            task_id=f"{TASK_ID_PREFIX}{job_id}.{uuid.uuid4().hex[:12]}",
        )

    def ask_to_join(self, job_id: int, attempt: int, queue: str, count: int) -> None:
        """Put `count` join messages for a multi-node attempt on the job's queue; each idle
        worker that takes one reserves a node rank."""
        for _ in range(count):
            self.app.send_task(
                JOIN_JOB_TASK,
                args=[job_id, attempt],
                queue=queue,
                retry=False,
                task_id=f"join-{job_id}.{attempt}.{uuid.uuid4().hex[:12]}",
            )


TASK_ID_PREFIX = "job-"
# Celery's Redis transport keeps delivered, unacknowledged messages here (kombu defaults).
UNACKED_HASH = "unacked"
UNACKED_INDEX = "unacked_index"


def redis_client(url: str, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def job_id_of(message: bytes | str) -> int | None:
    """The job id in a raw Celery message on Redis (from its task id), or None."""
    try:
        payload = json.loads(message)
        task_id = payload["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(task_id, str) or not task_id.startswith(TASK_ID_PREFIX):
        return None
    head = task_id[len(TASK_ID_PREFIX) :].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting on each queue (not counting ones a worker holds)."""
    names = sorted(set(queues))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return {name: int(n) for name, n in zip(names, pipe.execute(), strict=True)}


def job_ids_with_messages(
    client: redis.Redis, queues: Iterable[str], unacked_max_age: float
) -> set[int]:
    """Jobs that have a message waiting on one of `queues`, or held by a worker for less
    than `unacked_max_age` seconds. A message held longer by a worker that never claimed
    its job belongs to a worker that died; it does not count."""
    names = set(queues)
    found: set[int] = set()
    for name in sorted(names):
        for raw in client.lrange(name, 0, -1):
            job_id = job_id_of(raw)
            if job_id is not None:
                found.add(job_id)
    cutoff = time.time() - unacked_max_age
    fresh: list[Any] = list(client.zrangebyscore(UNACKED_INDEX, cutoff, "+inf"))
    if fresh:
        held: list[Any] = list(client.hmget(UNACKED_HASH, fresh))
        for entry in held:
            if entry is None:
                continue
            try:
                message, _exchange, routing_key = json.loads(entry)
            except (ValueError, TypeError):
                continue
            if routing_key not in names:
                continue
            job_id = job_id_of(json.dumps(message))
            if job_id is not None:
                found.add(job_id)
    return found
