"""What devices a worker offers: probed outside the Celery process (CUDA is never touched there).

GPUs: when an NVIDIA driver is present, a short child process (`python -m worker.devices`)
reads the CUDA runtime's devices (those CUDA_VISIBLE_DEVICES leaves visible) and prints them
as JSON. CPU workers offer `SEQTRAIN_WORKER_DEVICES` processes (gloo DDP when a job asks for
more than one); the memory of a CPU device is the machine's RAM.
`SEQTRAIN_WORKER_DEVICE_KIND=cpu` makes a worker on a GPU machine a CPU worker.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from shared.settings import Settings

PROBE_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # cpu | cuda
    count: int
    devices: list[dict[str, Any]] = field(default_factory=list)
    # CUDA_VISIBLE_DEVICES entries of the GPUs (what a trainer child is given), else empty.
    visible: list[str] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        """The smallest device's memory: what each rank of a job can count on."""
        return min((int(d.get("memory_bytes", 0)) for d in self.devices), default=0)


def total_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def nvidia_driver_present() -> bool:
    """Cheap test before paying for a CUDA probe (importing torch takes seconds)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def probe_cuda(timeout: float = PROBE_TIMEOUT_SECONDS) -> list[dict[str, Any]]:
    """The visible GPUs, read by a child process; [] when there are none or it fails."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "worker.devices"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0 or not result.stdout.strip():
        return []
    gpus: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return gpus


def probe(settings: Settings) -> DeviceInfo:
    if settings.worker_device_kind != "cpu" and nvidia_driver_present():
        gpus = probe_cuda()
        if gpus:
            listed = os.environ.get("CUDA_VISIBLE_DEVICES")
            visible = (
                [v.strip() for v in listed.split(",")][: len(gpus)]
                if listed
                else [str(i) for i in range(len(gpus))]
            )
            return DeviceInfo(kind="cuda", count=len(gpus), devices=gpus, visible=visible)
    count = max(1, settings.worker_devices)
    ram = total_ram_bytes()
    return DeviceInfo(
        kind="cpu",
        count=count,
        devices=[{"index": i, "name": "cpu", "memory_bytes": ram} for i in range(count)],
    )


_probed: dict[int, DeviceInfo] = {}


def probe_once(settings: Settings) -> DeviceInfo:
    """`probe`, run once per process: a worker's devices do not change while it runs."""
    if os.getpid() not in _probed:
        _probed[os.getpid()] = probe(settings)
    return _probed[os.getpid()]


def _print_cuda_devices() -> None:
    """Run as `python -m worker.devices`: one JSON line, a dict a visible GPU."""
    import torch

    gpus = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "memory_bytes": int(props.total_memory),
                "capability": f"{props.major}.{props.minor}",
                "bf16": bool(props.major >= 8),
            }
        )
    print(json.dumps(gpus))


if __name__ == "__main__":
    _print_cuda_devices()
