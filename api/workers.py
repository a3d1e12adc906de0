"""GET /api/v1/workers: the workers with their devices, queues and what each holds (the job
it runs or the multi-node rank it reserved: name, owner, priority, since when), and the
messages waiting on each queue."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response

from api import services
from api.auth import current_principal, require_principal
from api.http import job_url, reply
from api.openapi import API_PREFIX, operation
from api.schemas import HeldJob, WorkerList, WorkerOut
from shared.auth import Principal
from shared.infra.models import utcnow
from shared.infra.queue import queue_depths, redis_client
from shared.jobs.waiting import Holding, holdings
from shared.jobs.workers import list_workers

bp = Blueprint("workers", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)


def worker_out(worker: Any, held: Holding | None, visible: bool) -> WorkerOut:
    fields = {
        name: getattr(worker, name) for name in WorkerOut.model_fields if hasattr(worker, name)
    }
    fields.update(
        current_job_id=worker.current_job_id if visible else None,
        busy=worker.current_job_id is not None or held is not None,
        job=held_job(held) if visible and held is not None else None,
        heartbeat_age_seconds=max(0.0, (utcnow() - worker.heartbeat_at).total_seconds()),
    )
    return WorkerOut.model_validate(fields)


def held_job(held: Holding) -> HeldJob:
    return HeldJob(
        id=held.job_id,
        name=held.name,
        owner=held.owner,
        priority=held.priority,
        nodes=held.nodes,
        node_rank=held.node_rank,
        since=held.since,
        preempt_by=held.preempt_by,
        url=job_url(held.job_id),
    )


def visible_workers(principal: Principal) -> tuple[list[WorkerOut], set[str]]:
    """Every worker that has not stopped with what it holds, showing the caller only the
    jobs they may see, and the queues those workers take."""
    db = services().db
    rows = list_workers(db)
    held = holdings(db, rows)
    items = []
    for w in rows:
        job = held.get(w.name)
        if job is None and w.current_job_id is not None:  # a job since deleted: hidden
            items.append(worker_out(w, None, False))
            continue
        items.append(worker_out(w, job, job is not None and principal.may_see(job.owner_id)))
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
    """Every worker that has not stopped, with the job it runs or the rank of a multi-node
    attempt it holds (`job`), and the messages waiting on each queue they take (and the
    default queue). A job another user owns shows as `busy`, without its id or `job`."""
    settings = services().settings
    items, queues = visible_workers(current_principal())
    depths = depths_or_none(settings.redis_url, queues | {settings.default_queue})
    return reply(WorkerList(workers=items, queues=depths))
