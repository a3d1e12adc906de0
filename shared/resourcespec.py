"""The spec's `resources` section: where and on what a job runs, and how it is scheduled."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from shared.modelspec import _Section

# Names a spec may give instead of a number.
PRIORITY_NAMES = {"low": 25, "normal": 50, "high": 75}


class ResourcesSpec(_Section):
    devices: int = Field(
        1,
        ge=1,
        le=64,
        description="Devices per node the job trains on (GPUs, or CPU processes); more than one "
        "trains with DistributedDataParallel, each device taking `training.batch_size` examples.",
    )
    nodes: int = Field(
        1,
        ge=1,
        le=64,
        description="Workers (one per node) the job trains on together, each with "
        "`resources.devices` devices: all are reserved before any rank starts, and they "
        "rendezvous for one DistributedDataParallel run of nodes x devices ranks.",
    )

    queue: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Worker queue the job is routed to.",
    )
    max_runtime_seconds: int | None = Field(
        None,
        ge=1,
        le=30 * 24 * 3600,
        description="Stop and fail the attempt after this many seconds; null: no limit.",
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Attempts (worker lost -> resume) before the job fails."
    )
    priority: int = Field(
        50,
        ge=0,
        le=100,
        description="0-100, or `low` (25), `normal` (50), `high` (75): a free worker takes the "
        "highest first, and a waiting job's priority rises by one every "
        "SEQTRAIN_PRIORITY_AGING seconds. Above your account's `max_priority` it is refused; "
        "SEQTRAIN_PREEMPT_MARGIN above a running job's, that job is checkpointed and requeued "
        "to make room.",
    )
    preemptible: bool = Field(
        True,
        description="`false`: never checkpointed and requeued to make room for another job "
        "(admins only).",
    )

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_name(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in PRIORITY_NAMES:
            return PRIORITY_NAMES[value.strip().lower()]
        return value
