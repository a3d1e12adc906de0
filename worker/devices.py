"""What devices a worker offers: probed outside the Celery process (CUDA is never touched there).

CPU workers offer `SEQTRAIN_WORKER_DEVICES` processes (gloo DDP when a job asks for more
than one); the memory of a CPU device is the machine's RAM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from shared.settings import Settings


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # cpu | cuda
    count: int
    devices: list[dict[str, Any]] = field(default_factory=list)


def total_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def probe(settings: Settings) -> DeviceInfo:
    count = max(1, settings.worker_devices)
    ram = total_ram_bytes()
    return DeviceInfo(
        kind="cpu",
        count=count,
        devices=[{"index": i, "name": "cpu", "memory_bytes": ram} for i in range(count)],
    )
