"""A user's limits (an admin sets them; null is no limit) and the submissions they refuse.

max_priority  the highest `resources.priority` the user may submit: above it, a 422
max_running   jobs running at once: further jobs wait queued (shared.jobs.scheduler)
max_devices   devices (`resources.devices` x `resources.nodes`) in use at once: further jobs
              wait queued; a job that needs more on its own is a 422 (it could never start)
max_queued    jobs waiting at once: a submission past it is refused (a 429), counted in the
              insert's own transaction (shared.jobs.submission), so concurrent submissions
              never pass it; sweep trials count but are never refused

A change to max_running or max_devices wakes the user's queued jobs at once (`wake_held`).
Only an admin may submit a job with `resources.preemptible: false`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from shared.infra.db import Database
from shared.infra.models import User
from shared.infra.queue import JobQueue
from shared.jobs.scheduler import owner_queued
from shared.resourcespec import ResourcesSpec

log = logging.getLogger(__name__)

LIMITS = ("max_priority", "max_running", "max_devices", "max_queued")
# The limits that hold queued jobs back (the others refuse submissions).
SOFT_LIMITS = frozenset({"max_running", "max_devices"})
# Queued jobs woken when a soft limit changes: more than start at once on most clusters;
# the rest are woken as those end (worker.tasks) or by the reconciler.
WAKE_ON_CHANGE = 64
MAX_LIMIT = 2**31 - 1  # the columns are 32-bit integers


class Limits(BaseModel):
    """A user's limits, or (to set them) the ones a request changes: a field left out stays
    as it is, a null clears it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_priority: int | None = Field(
        None,
        ge=0,
        le=100,
        description="The highest `resources.priority` the user may submit (0-100); above it a "
        "submission is a 422.",
    )
    max_running: int | None = Field(
        None,
        ge=0,
        le=MAX_LIMIT,
        description="Jobs running at once; the user's further jobs wait in the queue.",
    )
    max_devices: int | None = Field(
        None,
        ge=0,
        le=MAX_LIMIT,
        description="Devices (`resources.devices` x `resources.nodes`) in use at once; the "
        "user's further jobs wait in the queue, and a job needing more is a 422.",
    )
    max_queued: int | None = Field(
        None,
        ge=0,
        le=MAX_LIMIT,
        description="Jobs waiting in the queue at once; a submission past it is a 429 "
        "(0: the user may not submit). Sweep trials count, but are never refused.",
    )


def limits_of(user: User) -> Limits:
    return Limits.model_validate({name: getattr(user, name) for name in LIMITS})


def user_limits(db: Database, user_id: int) -> Limits:
    """The limits of the user with this id (none for an unknown id)."""
    columns = [getattr(User, name) for name in LIMITS]
    with db.session() as session:
        row = session.execute(select(*columns).where(User.id == user_id)).first()
    return Limits() if row is None else Limits.model_validate(row._asdict())


def set_limits(db: Database, name: str, changes: Mapping[str, int | None]) -> User | None:
    """Set some of a user's limits (a None clears one); the user, or None if unknown."""
    unknown = set(changes) - set(LIMITS)
    if unknown:
        raise ValueError(f"not a limit: {', '.join(sorted(unknown))}")
    with db.session() as session:
        user = session.scalars(select(User).where(User.name == name)).first()
        if user is None:
            return None
        for limit, value in changes.items():
            setattr(user, limit, value)
        session.flush()
        return user


def wake_held(db: Database, queue: JobQueue, user_id: int) -> bool:
    """After a soft limit changes, jobs it held may start now, not at the reconciler's next
    pass: the user's best queued jobs get a message (theirs was spent on a worker that
    could not start them; one with nothing to take does nothing). False when Redis is
    unreachable: the limits hold all the same, and the reconciler enqueues what waits."""
    try:
        queue.enqueue_jobs(owner_queued(db, user_id, WAKE_ON_CHANGE))
    except Exception as exc:
        log.warning("user %s: queued jobs not woken (%s)", user_id, type(exc).__name__)
        return False
    return True


def over_limits(resources: ResourcesSpec, limits: Limits, is_admin: bool) -> list[tuple[str, str]]:
    """(spec field, why) for each way a job's resources pass the submitter's limits."""
    refusals = []
    if limits.max_priority is not None and resources.priority > limits.max_priority:
        refusals.append(
            (
                "resources.priority",
                f"priority {resources.priority} is above your limit of {limits.max_priority}",
            )
        )
    if not resources.preemptible and not is_admin:
        refusals.append(
            (
                "resources.preemptible",
                "only an admin may submit a job that cannot be preempted",
            )
        )
    devices, nodes = resources.devices, resources.nodes
    if limits.max_devices is not None and devices * nodes > limits.max_devices:
        needed = _devices(devices) if nodes == 1 else f"{_devices(devices)} x {nodes} nodes"
        refusals.append(
            (
                "resources.devices",
                f"{needed} is above your limit of {_devices(limits.max_devices)} at once: "
                "the job could never start",
            )
        )
    return refusals


def _devices(count: int) -> str:
    return f"{count} device" if count == 1 else f"{count} devices"
