"""The Celery client both sides share: one configuration, tasks addressed by name.

The API enqueues with `enqueue_job(job_id, queue)` and never imports the worker's code
(nor torch). Only the job id travels; the task re-reads everything from SQL.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from celery import Celery

from shared.settings import Settings

RUN_JOB_TASK = "seqtrain.run_job"
# A multi-node attempt's call for one more worker: args [job id, attempt].
JOIN_JOB_TASK = "seqtrain.join_job"
# Work on a trained job's checkpoint (a job output: batch predictions, an export): args [output id].
RUN_OUTPUT_TASK = "seqtrain.run_output"


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
    """Producer side: puts job ids on Redis.

    Messages are Celery's own (protocol 2, built by `app.amqp.as_task_v2`, in the envelope
    kombu's Redis transport writes), pushed with one LPUSH per queue in a MULTI/EXEC: a
    batch of jobs costs one round trip and lands all or none. FIFO holds within a batch.
    `tests/test_submissions.py` checks each message against what Celery's own `send_task`
    writes.
    """

    def __init__(self, settings: Settings) -> None:
        self.app = make_celery(settings, "seqtrain-client")
        self._redis = redis_client(settings.redis_url, timeout=5.0)

    def enqueue_job(self, job_id: int, queue: str) -> None:
        self.enqueue_jobs([(job_id, queue)])

    def enqueue_jobs(self, jobs: Iterable[tuple[int, str]]) -> None:
        """One run message per (job id, queue). Raises when Redis is down (no retry): the
        jobs stay queued in SQL and the reconciler enqueues them. The task id names the job,
        so the reconciler can tell which jobs have a message."""
        self._push(
            (queue, RUN_JOB_TASK, f"{TASK_ID_PREFIX}{job_id}.{uuid.uuid4().hex[:12]}", [job_id])
            for job_id, queue in jobs
        )

    def enqueue_outputs(self, outputs: Iterable[tuple[int, str]]) -> None:
        """One run message per (output id, queue); raises when Redis is down (the output
        stays queued in SQL and the reconciler enqueues it)."""
        self._push(
            (
                queue,
                RUN_OUTPUT_TASK,
                f"{OUTPUT_TASK_ID_PREFIX}{output_id}.{uuid.uuid4().hex[:12]}",
                [output_id],
            )
            for output_id, queue in outputs
        )

    def ask_to_join(self, job_id: int, attempt: int, queue: str, count: int) -> None:
        """Put `count` join messages for a multi-node attempt on the job's queue; each idle
        worker that takes one reserves a node rank."""
        self._push(
            (
                queue,
                JOIN_JOB_TASK,
                f"join-{job_id}.{attempt}.{uuid.uuid4().hex[:12]}",
                [job_id, attempt],
            )
            for _ in range(count)
        )

    def message(self, task: str, task_id: str, args: list[Any], queue: str) -> bytes:
        """A task message exactly as Celery's Redis transport stores it on `queue`."""
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            task_id, task, args=args, ignore_result=True, argsrepr=repr(args), kwargsrepr="{}"
        )
        properties.update(
            delivery_mode=2,  # persistent
            delivery_info={"exchange": "", "routing_key": queue},
            priority=0,
            body_encoding="base64",
            delivery_tag=str(uuid.uuid4()),
        )
        envelope = {
            "body": base64.b64encode(json.dumps(body).encode()).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
        return json.dumps(envelope).encode()

    def _push(self, messages: Iterable[tuple[str, str, str, list[Any]]]) -> None:
        by_queue: dict[str, list[bytes]] = {}
        for queue, task, task_id, args in messages:
            by_queue.setdefault(queue, []).append(self.message(task, task_id, args, queue))
        if not by_queue:
            return
        # LPUSH a b c leaves c at the head; workers pop from the tail: a runs first.
        if len(by_queue) == 1:  # one command is atomic on its own
            [(queue, payloads)] = by_queue.items()
            self._redis.lpush(queue, *payloads)
            return
        pipe = self._redis.pipeline(transaction=True)
        for queue, payloads in by_queue.items():
            pipe.lpush(queue, *payloads)
        pipe.execute()


TASK_ID_PREFIX = "job-"
OUTPUT_TASK_ID_PREFIX = "output-"
# Celery's Redis transport keeps delivered, unacknowledged messages here (kombu defaults).
UNACKED_HASH = "unacked"
UNACKED_INDEX = "unacked_index"


def redis_client(url: str, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def job_id_of(message: bytes | str, prefix: str = TASK_ID_PREFIX) -> int | None:
    """The job id (with OUTPUT_TASK_ID_PREFIX: the output id) in a raw Celery message on
    Redis (from its task id), or None."""
    try:
        payload = json.loads(message)
        task_id = payload["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(task_id, str) or not task_id.startswith(prefix):
        return None
    head = task_id[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting on each queue (not counting ones a worker holds)."""
    names = sorted(set(queues))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return {name: int(n) for name, n in zip(names, pipe.execute(), strict=True)}


def job_ids_with_messages(
    client: redis.Redis,
    wanted: Mapping[str, Iterable[int]],
    unacked_max_age: float,
    chunk: int = 500,
    prefix: str = TASK_ID_PREFIX,
) -> set[int]:
    """Which of the `wanted` jobs (queue -> job ids) have a message: waiting on that queue,
    or held by a worker for less than `unacked_max_age` seconds. A message held longer by
    a worker that never claimed its job belongs to a worker that died; it does not count.

    Each queue is read from its tail, where the oldest messages wait to be delivered, in
    overlapping chunks, and only until every wanted job of that queue is found: asked about
    the longest-waiting jobs, a queue with a long backlog costs a chunk or two, not the
    whole list. A job whose message is gone costs one read of the whole list. A message
    that workers' pops move past a chunk boundary between two reads can be missed; the
    caller then enqueues a duplicate, which is harmless (only one claim succeeds).
    """
    targets = {queue: set(ids) for queue, ids in wanted.items() if ids}
    if not targets:
        return set()
    every = set().union(*targets.values())
    found = _held_by_workers(client, set(targets), unacked_max_age, prefix) & every
    step = max(1, chunk - chunk // 4)
    for queue, ids in sorted(targets.items()):
        missing = ids - found
        offset = 0
        while missing:
            # LRANGE -(offset + chunk) -(offset + 1): `chunk` messages, the tail first.
            batch = client.lrange(queue, -(offset + chunk), -(offset + 1))
            for raw in batch:
                job_id = job_id_of(raw, prefix)
                if job_id in missing:
                    missing.discard(job_id)
                    found.add(job_id)
            if len(batch) < chunk:
                break
            offset += step
    return found


def _held_by_workers(
    client: redis.Redis, queues: set[str], max_age: float, prefix: str = TASK_ID_PREFIX
) -> set[int]:
    """Jobs whose message a worker took from one of `queues` less than `max_age` s ago."""
    found: set[int] = set()
    cutoff = time.time() - max_age
    fresh: list[Any] = list(client.zrangebyscore(UNACKED_INDEX, cutoff, "+inf"))
    if not fresh:
        return found
    held: list[Any] = list(client.hmget(UNACKED_HASH, fresh))
    for entry in held:
        if entry is None:
            continue
        try:
            message, _exchange, routing_key = json.loads(entry)
        except (ValueError, TypeError):
            continue
        if routing_key not in queues:
            continue
        job_id = job_id_of(json.dumps(message), prefix)
        if job_id is not None:
            found.add(job_id)
    return found
