"""Small spec builders shared by the tests."""

from __future__ import annotations

import copy
from typing import Any

TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "task": "classification",
    "data": {"dataset": "builtin:sentiment", "max_length": 32, "val_fraction": 0.2},
    "model": {"type": "lstm", "embedding_dim": 16, "hidden_size": 16},
    "training": {"epochs": 3, "batch_size": 32, "lr": 0.01, "log_every_steps": 5},
    "checkpoint": {"every_epochs": 1, "keep_last": 2},
}


def tiny_spec(**sections: dict[str, Any]) -> dict[str, Any]:
    """TINY_SPEC with sections merged in, e.g. tiny_spec(model={"type": "gru"}, name="x")."""
    spec = copy.deepcopy(TINY_SPEC)
    for key, value in sections.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return spec


def upload(client, content: bytes, filename: str = "data.tsv", **options: Any):
    """POST a dataset file as multipart through a Flask test client; returns the response."""
    import io

    form: dict[str, Any] = {k: str(v) for k, v in options.items()}
    form["file"] = (io.BytesIO(content), filename)
    return client.post("/api/v1/datasets", data=form, content_type="multipart/form-data")


SMALL_TSV = b"sentence\tlabel\n" + b"".join(
    f"{adj} film number {i}\t{label}\n".encode()
    for i in range(40)
    for adj, label in (("great", "pos"), ("awful", "neg"))
)


def row_count(db: Any, model: Any) -> int:
    """How many rows `model`'s table holds now."""
    from sqlalchemy import func, select

    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)))


def register_worker(db: Any, name: str, queue: str, devices: int = 1) -> None:
    """A live CPU worker with `devices` devices on `queue` in the worker registry."""
    from shared.jobs import workers

    workers.register(
        db,
        name=name,
        hostname="host",
        pid=1,
        queues=[queue],
        device_kind="cpu",
        device_count=devices,
        devices=[{"name": "cpu", "memory_bytes": 8 << 30}] * devices,
    )
