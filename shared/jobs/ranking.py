"""The order of the queue, as pure functions: priority levels with aging, each owner's
share, the soft quotas that hold an owner's jobs back, and the order a free worker takes
the candidates in (shared.jobs.scheduler reads them from SQL).

A job's rank key is its submit time in epoch seconds less priority x aging: within one
owner's jobs a smaller key is a higher priority, or as high and older, so that each
owner's best job is one index probe (`ix_jobs_claim`).

Between owners the order is by level, then share, then age. Aging lifts a whole priority
together: the level of the jobs of priority p is

    level(p) = p + floor(longest wait among the candidates of priority p / aging)

so a priority whose jobs wait rises one level every `aging` seconds until it is served
(nothing starves behind a stream of higher-priority work), while jobs of one priority stay
at one level, where fair share orders them: the owner with the smaller share first
(device-seconds, halved every HALF_LIFE, counting what runs now), then the smaller key
(the oldest). Were each job aged on its own, a backlog older than one aging period would
sit a level above newer jobs of the same priority and fair share would never apply to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

DEFAULT_PRIORITY = 50
DEFAULT_AGING = 600.0
# Past usage counts half after this many seconds.
HALF_LIFE = 3600.0


def rank_key(priority: int, submitted: datetime, aging: float) -> float:
    return submitted.timestamp() - priority * aging


def level(key: float, now: float, aging: float) -> int:
    """A queued job's priority plus one per `aging` s it waited (on its own, not its
    priority's: see `levels`)."""
    return math.floor((now - key) / aging + 1e-9)


def levels(candidates: Iterable[Candidate], now: float, aging: float) -> dict[int, int]:
    """Each candidate priority's level now: the priority plus one per `aging` seconds its
    longest-waiting candidate has waited."""
    oldest: dict[int, float] = {}
    for c in candidates:
        submitted = c.rank_key + c.priority * aging
        oldest[c.priority] = min(oldest.get(c.priority, submitted), submitted)
    return {p: p + math.floor(max(0.0, now - t) / aging + 1e-9) for p, t in oldest.items()}


def decayed(usage: float, since: datetime | None, now: float) -> float:
    """`usage` recorded at `since`, halved every HALF_LIFE seconds up to `now`."""
    if since is None or usage <= 0:
        return 0.0
    return usage * 0.5 ** (max(0.0, now - since.timestamp()) / HALF_LIFE)


@dataclass(frozen=True)
class Policy:
    aging: float = DEFAULT_AGING
    fair_share: bool = True


@dataclass
class OwnerLoad:
    """What one owner holds now, their recent usage and their soft limits."""

    running: int = 0
    devices: int = 0
    usage: float = 0.0
    max_running: int | None = None
    max_devices: int | None = None

    def held_back(self, devices: int) -> str | None:
        """Why a job of theirs needing `devices` may not start now (their quota), or None."""
        if self.max_running is not None and self.running >= self.max_running:
            return f"your quota: {self.running} running (at most {self.max_running})"
        if self.max_devices is not None and self.devices + devices > self.max_devices:
            return (
                f"your quota: {self.devices} devices in use, this job needs {devices} "
                f"(at most {self.max_devices})"
            )
        return None


@dataclass(frozen=True)
class Candidate:
    """A queued job as the scheduler sees it."""

    job_id: int
    owner_id: int | None
    rank_key: float
    devices: int
    nodes: int
    priority: int = DEFAULT_PRIORITY

    @property
    def footprint(self) -> int:
        return self.devices * self.nodes


def order(
    candidates: Iterable[Candidate],
    loads: Mapping[int | None, OwnerLoad],
    policy: Policy,
    now: float,
) -> list[Candidate]:
    """The candidates a free worker may take, best first: higher level (`levels`), then
    (with fair share) the owner with the smaller share, then the smaller rank key (older),
    then id. An owner at a soft quota's limit is left out."""
    idle = OwnerLoad()
    allowed = [c for c in candidates if loads.get(c.owner_id, idle).held_back(c.footprint) is None]
    level_of = levels(allowed, now, policy.aging)

    def sort_key(c: Candidate) -> tuple[int, float, float, int]:
        share = loads.get(c.owner_id, idle).usage if policy.fair_share else 0.0
        return (-level_of[c.priority], share, c.rank_key, c.job_id)

    return sorted(allowed, key=sort_key)


def running_usage(devices: int, nodes: int, claimed: datetime | None, now: float) -> float:
    """Device-seconds a running attempt has used so far."""
    if claimed is None:
        return 0.0
    return devices * nodes * max(0.0, now - claimed.timestamp())
