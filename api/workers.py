"""GET /api/v1/workers: the workers with their devices, queues and current job, and the
messages waiting on each queue."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response

from api import services
from api.auth import current_principal, require_principal
from api.http import reply
from api.openapi import API_PREFIX, operation
from api.schemas import WorkerList, WorkerOut
from shared import jobs
from shared.auth import Principal
from shared.infra.models import utcnow
from shared.infra.queue import queue_depths, redis_client
from shared.jobs.workers import list_workers

bp = Blueprint("workers", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


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


def visible_workers(principal: Principal) -> tuple[list[WorkerOut], set[str]]:
    """Every worker that has not stopped, showing the caller only the jobs they may see, and
    the queues those workers take."""
    db = services().db
    rows = list_workers(db)
    owners = jobs.owners(db, job_ids={w.current_job_id for w in rows if w.current_job_id})
    items = [
        worker_out(
            w,
            w.current_job_id is not None
            and w.current_job_id in owners
            and principal.may_see(owners[w.current_job_id].id),
        )
        for w in rows
    ]
    return items, {q for w in rows for q in w.queues}


def depths_or_none(redis_url: str, queues: set[str]) -> dict[str, int] | None:
    """Messages waiting on each queue; None when Redis does not answer."""
    try:
        with redis_client(redis_url, timeout=1.0) as client:
            return queue_depths(client, queues)
    except redis.RedisError:
        return None


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
    settings = services().settings
    items, queues = visible_workers(current_principal())
    depths = depths_or_none(settings.redis_url, queues | {settings.default_queue})
    return reply(WorkerList(workers=items, queues=depths))
