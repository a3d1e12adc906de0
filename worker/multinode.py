"""Multi-node attempts (resources.nodes > 1): every node reserved, all or nothing, before any
rank starts; then each node runs its share of the ranks.

The worker that claimed the job is node 0 (`lead`): it records its row in job_nodes with
the rendezvous endpoint (SEQTRAIN_NODE_ADDRESS and a free port), puts nodes - 1 join
messages on the job's queue, and waits, renewing the lease, until every rank is taken.
Every worker that frees up on the queue takes a free rank before any other work (`join`,
through shared.jobs.scheduler), and only one reservation runs at a time per queue, so two
multi-node jobs never hold workers the other needs. When all rows exist every node starts
torchrun's agent for its node rank (worker.launch). Node 0 gives the attempt back (requeued,
or failed after max_attempts) only when fewer live workers than it needs could hold it,
checked every SEQTRAIN_RESERVE_SECONDS: it deletes every row, and the others see their
rows gone and return without starting anything.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time

from sqlalchemy.exc import OperationalError

from shared import jobs
from shared.infra.db import Database
from shared.infra.queue import JobQueue
from shared.jobs import nodes
from shared.jobs.scheduler import fitting_workers
from shared.protocol import AttemptOutcome, JobStatus
from shared.settings import Settings
from shared.spec import JobSpec
from worker.launch import NodePlan
from worker.supervisor import (
    CANCELLED_BY_USER,
    OWNED_BY_ANOTHER,
    Outcome,
    follow,
    record,
    supervise,
)

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on this machine now, for node 0's rendezvous store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def rendezvous_seconds(settings: Settings) -> int:
    return max(60, math.ceil(settings.reserve_seconds))


def lead(
    db: Database,
    settings: Settings,
    job_id: int,
    attempt: int,
    spec: JobSpec,
    shutting_down: threading.Event | None = None,
) -> Outcome:
    """Node 0 of a claimed multi-node attempt: reserve the other nodes, then supervise the
    attempt (recording its status) as for one node. Returns how the attempt ended."""
    actor, wanted = settings.worker_name, spec.resources.nodes
    address, port = settings.node_address, free_port()
    if not nodes.reserve_first(db, job_id, attempt, actor, address, port):
        return Outcome(AttemptOutcome.FENCED, OWNED_BY_ANOTHER, None)
    try:
        try:
            JobQueue(settings).ask_to_join(job_id, attempt, spec.resources.queue, wanted - 1)
        except Exception as exc:  # the reservation times out and the job is requeued
            log.warning("job %s: could not ask for more workers: %s", job_id, exc)
        with contextlib.suppress(OperationalError):
            jobs.note_attempt(
                db, job_id, attempt, f"reserving {wanted} workers (node 0: {actor}, {address})"
            )
        state, held = _await_nodes(
            db,
            settings,
            job_id,
            attempt,
            wanted,
            lead=True,
            queue=spec.resources.queue,
            devices=spec.resources.devices,
        )
        if state == "ready":
            names = ", ".join(
                f"{n.node_rank}: {n.worker}" for n in nodes.members(db, job_id, attempt)
            )
            jobs.note_attempt(
                db, job_id, attempt, f"all {wanted} workers reserved (node {names}); starting"
            )
            plan = NodePlan(wanted, 0, address, port, rendezvous_seconds(settings))
            return supervise(db, settings, job_id, attempt, spec, shutting_down, node=plan)
        # All or nothing: release every rank before the attempt is given back, so that the
        # other nodes return without starting anything.
        nodes.release(db, job_id, attempt)
        return record(db, job_id, attempt, _given_back(state, held, wanted, settings), actor)
    finally:
        with contextlib.suppress(OperationalError):
            nodes.release(db, job_id, attempt)


def _given_back(state: str, held: int, wanted: int, settings: Settings) -> Outcome:
    """How an attempt whose reservation did not complete ends, by why it stopped waiting."""
    if state == "cancelled":
        return Outcome(AttemptOutcome.CANCELLED, CANCELLED_BY_USER, None)
    if state == "fenced":
        return Outcome(AttemptOutcome.FENCED, OWNED_BY_ANOTHER, None)
    if state == "shutdown":
        message = "worker shutting down while reserving; requeued"
        return Outcome(AttemptOutcome.REQUEUED, message, None)
    return Outcome(
        AttemptOutcome.RETRY,
        f"reserved {held} of {wanted} workers within {settings.reserve_seconds:g} s",
        None,
    )


def join(
    db: Database,
    settings: Settings,
    job_id: int,
    attempt: int,
    shutting_down: threading.Event | None = None,
    node_rank: int | None = None,
) -> str:
    """Take a free node rank of the attempt (or run `node_rank`, taken already), wait for
    the rest, then run this node's ranks until the attempt ends. Returns what happened."""
    job = jobs.get_job(db, job_id)
    if job.status != JobStatus.RUNNING or job.attempt != attempt:
        return "skipped: the attempt is over"
    spec = JobSpec.model_validate(job.spec)
    if node_rank is None:
        node_rank = nodes.take_rank(db, job_id, attempt, spec.resources.nodes, settings.worker_name)
    if node_rank is None:
        return "skipped: every node is taken"
    log.info("job %s: attempt %s: reserved node %s", job_id, attempt, node_rank)
    state, _ = _await_nodes(
        db,
        settings,
        job_id,
        attempt,
        spec.resources.nodes,
        lead=False,
        shutting_down=shutting_down,
        queue=spec.resources.queue,
        devices=spec.resources.devices,
    )
    if state != "ready":
        nodes.release_node(db, job_id, attempt, settings.worker_name)
        return f"released: {state}"
    first = nodes.members(db, job_id, attempt)[0]
    if first.address is None or first.port is None:
        return "released: node 0 has no rendezvous endpoint"
    plan = NodePlan(
        spec.resources.nodes, node_rank, first.address, first.port, rendezvous_seconds(settings)
    )
    return follow(db, settings, job_id, attempt, plan, shutting_down)


def _await_nodes(
    db: Database,
    settings: Settings,
    job_id: int,
    attempt: int,
    wanted: int,
    *,
    lead: bool,
    queue: str,
    devices: int,
    shutting_down: threading.Event | None = None,
) -> tuple[str, int]:
    """Poll until all `wanted` ranks are reserved. Returns (state, ranks held): ready;
    timeout; fenced (the attempt is over); cancelled; shutdown; released (a follower whose
    row node 0 deleted).

    Reservations go first (shared.jobs.scheduler): every worker that frees up on the
    queue takes a rank, so the wait ends as running jobs end. Node 0 gives the attempt
    back only when, SEQTRAIN_RESERVE_SECONDS on, fewer live workers than `wanted` could
    hold it; a follower waits as long as node 0 holds the attempt (its lease covers it)."""
    started = time.monotonic()
    next_heartbeat = started + settings.heartbeat_seconds
    next_check = started + settings.reserve_seconds
    held = 0
    while True:
        now = time.monotonic()
        try:
            owned, cancel, _ = jobs.poll_running(db, job_id, attempt)
            if not owned:
                return "fenced", held
            if cancel:
                return "cancelled", held
            if shutting_down is not None and shutting_down.is_set():
                return "shutdown", held
            taken = nodes.members(db, job_id, attempt)
            held = len(taken)
            if not lead and settings.worker_name not in {n.worker for n in taken}:
                return "released", held
            if held >= wanted:
                return "ready", held
            if lead and now >= next_heartbeat:
                jobs.renew_lease(db, job_id, attempt, settings.lease_seconds)
                next_heartbeat = now + settings.heartbeat_seconds
            if lead and now >= next_check:
                if _live_fitting(db, settings, queue, devices) < wanted:
                    return "timeout", held
                next_check = now + settings.reserve_seconds
        except OperationalError as exc:
            log.warning("job %s: database unreachable while reserving: %s", job_id, exc.orig)
        time.sleep(min(0.2, settings.cancel_poll_seconds))


def _live_fitting(db: Database, settings: Settings, queue: str, devices: int) -> int:
    with db.session() as session:
        return fitting_workers(session, queue, devices, settings.worker_stale_seconds)
