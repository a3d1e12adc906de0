"""Helpers of bench/scheduling.py for the scenarios that run the whole local service: users
with their own tokens and limits, job timings as the API reports them, SQL counts while
workers run, checkpoint weights and the uninterrupted in-process reference run."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, load_file
from sqlalchemy import func, select, update

from bench.service import TERMINAL, LocalService
from cli.client import Client
from shared import jobs
from shared.auth import create_token, create_user
from shared.infra.db import Database
from shared.infra.models import Job, JobEvent, User
from shared.infra.storage import open_store
from shared.settings import Settings
from tests.helpers import tiny_spec

# 1.5-3 s a job on a warm worker with two trainers on the 2 cores, with the host's load
# (40 epochs of 20 steps).
SHORT_EPOCHS = 40


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def short_spec(name: str, epochs: int = SHORT_EPOCHS, **resources: Any) -> dict[str, Any]:
    """The tiny classification spec on builtin:sentiment, one checkpoint at its end."""
    spec = tiny_spec(
        training={"epochs": epochs},
        checkpoint={"every_epochs": epochs, "keep_last": 1},
        resources=resources,
    )
    return {**spec, "name": name}


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentiles(values: list[float], digits: int = 3) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], digits)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], digits)}


class Users:
    """Users of one LocalService, each with a token and a Client; limits set in SQL."""

    def __init__(self, svc: LocalService) -> None:
        self.svc = svc
        self.db = Database(svc.env["DATABASE_URL"])

    def add(self, name: str, **limits: int) -> tuple[int, Client]:
        user_id = create_user(self.db, name).id
        _, token = create_token(self.db, name)
        if limits:
            with self.db.session() as session:
                session.execute(update(User).where(User.id == user_id).values(**limits))
        return user_id, Client(self.svc.client.base_url, token, timeout=600)

    def close(self) -> None:
        self.db.dispose()


def submit_all(client: Client, specs: Iterable[dict[str, Any]]) -> list[int]:
    return [client.post("/api/v1/jobs", spec)["id"] for spec in specs]


def status_counts(db: Database, owner_id: int | None = None) -> dict[str, int]:
    query = select(Job.status, func.count()).group_by(Job.status)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    with db.session() as session:
        return {status: count for status, count in session.execute(query).all()}


def finished(db: Database, ids: Iterable[int]) -> int:
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count()).where(Job.id.in_(list(ids)), Job.status.in_(TERMINAL))
            )
            or 0
        )


def wait_finished(db: Database, ids: list[int], timeout: float, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while finished(db, ids) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - finished(db, ids)} of {len(ids)} jobs still open")
        time.sleep(poll)


def details(client: Client, ids: Iterable[int]) -> list[dict[str, Any]]:
    return [client.get(f"/api/v1/jobs/{job_id}") for job_id in ids]


def warm_up(svc: LocalService) -> None:
    """A short job on every worker (the first trainer of a worker starts cold, ~8 s)."""
    db = Database(svc.env["DATABASE_URL"])
    spec = short_spec("warm-up", epochs=1)
    ids = submit_all(svc.client, [spec] * (2 * svc.workers))
    wait_finished(db, ids, 300)
    with db.session() as session:
        used = set(
            session.scalars(
                select(JobEvent.actor).where(
                    JobEvent.job_id.in_(ids), JobEvent.message.like("claimed%")
                )
            )
        )
    db.dispose()
    log(f"warm-up: {len(ids)} jobs ran on {sorted(used)}")


class Sampler:
    """SQL every `every` s while a scenario runs: the most running and queued jobs ever
    seen for one owner, and how many samples were taken."""

    def __init__(self, db: Database, owner_id: int, every: float = 0.05) -> None:
        self.db, self.owner_id, self.every = db, owner_id, every
        self.most = {"running": 0, "queued": 0}
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(self.every):
            seen = status_counts(self.db, self.owner_id)
            self.samples += 1
            for status in self.most:
                self.most[status] = max(self.most[status], seen.get(status, 0))

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.thread.join()
        return {**self.most, "samples": self.samples}


def checkpoint_weights(svc: LocalService, db: Database, job_id: int) -> dict[str, torch.Tensor]:
    """The model tensors of the job's latest checkpoint in the service's store."""
    latest = jobs.latest_checkpoint(db, job_id)
    assert latest is not None, f"job {job_id} has no checkpoint"
    tensors = load(open_store(Settings.from_env(svc.env)).get_bytes(latest.uri))
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def reference_weights(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The spec trained in this process without interruption on 1 thread, as the workers'
    trainers run with SEQTRAIN_TORCH_THREADS=1: its last checkpoint's model tensors."""
    from shared.spec import parse_spec
    from shared.zoo.checkpoints import save_checkpoint
    from worker.trainer import Reporter, train

    with tempfile.TemporaryDirectory() as tmp:
        saved: list[Path] = []

        def save(state: Any, epoch: int, step: int, metrics: Any, is_best: bool = False) -> None:
            path = Path(tmp) / f"ref-{step}-{state['next_batch']}.safetensors"
            save_checkpoint(path, state)
            saved.append(path)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:  # the trainer's progress lines are not the bench's: stdout is its JSON
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                train(parse_spec(spec), Reporter(lambda *a: None, save))
        finally:
            torch.set_num_threads(threads)
        return {k: v for k, v in load_file(saved[-1]).items() if k.startswith("model.")}


def same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> bool:
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)
