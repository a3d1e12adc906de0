"""Can any worker ever run this job? Checked at submit, against the worker registry.

A job goes to the workers that consume its queue (resources.queue). One of them fits when it
has at least resources.devices devices and each of its devices has the memory the estimate
asks for (shared.jobs.estimate, for that worker's kind of device); a job on several nodes needs
resources.nodes such workers. A job no registered worker on its queue fits is refused with
the numbers. While no worker has registered for the queue, nothing is known and the job is
accepted (it waits for one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from shared.infra.db import Database
from shared.infra.models import Worker
from shared.jobs import workers
from shared.jobs.estimate import estimate_training, gib
from shared.settings import Settings
from shared.spec import JobSpec


class PlacementError(ValueError):
    """No registered worker can run the job; `field` is the spec field to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def device_memory(worker: Worker) -> int:
    """The smallest device's memory on `worker` (each rank gets one device)."""
    return min((int(d.get("memory_bytes", 0)) for d in worker.devices or []), default=0)


_registry: dict[str, tuple[float, int, list[Worker]]] = {}


def registered_workers(db: Database, max_age: float) -> list[Worker]:
    """Every registered worker (stopped ones too), read again when the copy this process
    holds is older than `max_age` seconds (submits come in bursts, workers change rarely;
    a registration in this process refreshes it at once)."""
    now, generation = time.monotonic(), workers.changes()
    cached = _registry.get(db.url)
    if cached is not None and now - cached[0] < max_age and cached[1] == generation:
        return cached[2]
    found = workers.list_workers(db, include_stopped=True)
    _registry[db.url] = (now, generation, found)
    return found


def check_placement(
    db: Database, spec: JobSpec, settings: Settings, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The estimate to store on the job; PlacementError when no registered worker fits it.
    `base`: the registry's summary of a pretrained base model (with its parameter count)."""
    queue, wanted, nodes = spec.resources.queue, spec.resources.devices, spec.resources.nodes
    # The registry keeps every worker it has seen (stopped ones too).
    registry = registered_workers(db, settings.registry_cache_seconds)
    candidates = [w for w in registry if queue in (w.queues or [])]
    estimates = {
        kind: estimate_training(spec, kind, base=base)
        for kind in {w.device_kind for w in candidates}
    }
    if not candidates:
        estimate = estimate_training(spec, "cpu", base=base)
        estimate["placement"] = f"no worker has registered for queue {queue!r} yet"
        return estimate
    enough_devices = [w for w in candidates if w.device_count >= wanted]
    if not enough_devices:
        most = max(w.device_count for w in candidates)
        raise PlacementError(
            "resources.devices",
            f"the job needs {wanted} devices on one worker; the workers on queue {queue!r} "
            f"have at most {most}",
        )
    fitting = [
        w
        for w in enough_devices
        if device_memory(w) >= estimates[w.device_kind]["per_device_bytes"]
    ]
    if not fitting:
        roomiest = max(enough_devices, key=device_memory)
        need = estimates[roomiest.device_kind]
        raise PlacementError(
            "training.batch_size",
            f"training needs about {gib(need['per_device_bytes'])} per {roomiest.device_kind} "
            f"device ({need['parameters']:,} parameters: weights {gib(need['weights_bytes'])}, "
            f"gradients {gib(need['gradients_bytes'])}, optimizer {gib(need['optimizer_bytes'])}, "
            f"activations {gib(need['activations_bytes'])} for batch_size "
            f"{spec.training.batch_size} x max_length {spec.data.max_length}, runtime "
            f"{gib(need['overhead_bytes'])}); the largest device on queue {queue!r} has "
            f"{gib(device_memory(roomiest))}: lower training.batch_size or data.max_length, or "
            "use a smaller model",
        )
    if len(fitting) < nodes:
        raise PlacementError(
            "resources.nodes",
            f"the job needs {nodes} workers with {wanted} devices each; queue {queue!r} has "
            f"{len(fitting)}",
        )
    best = max(fitting, key=device_memory)
    estimate = dict(estimates[best.device_kind])
    estimate["placement"] = f"{len(fitting)} registered worker(s) on queue {queue!r} fit"
    return estimate
