"""The Celery client both sides share: one configuration, tasks addressed by name.

The API enqueues with `enqueue_job(job_id, queue)` and never imports the worker's code
(nor torch). Only the job id travels; the task re-reads everything from SQL.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.settings import Settings

RUN_JOB_TASK = "seqtrain.run_job"


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
        self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, retry=False)
