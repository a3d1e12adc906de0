"""Nothing lost: crashed trainers, dead workers, drained workers and lost queue messages,
recovered by real worker processes, a real Redis and a real database."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file
from sqlalchemy import select

from cli.services import stop, worker_command
from shared import jobs
from shared.infra.models import JobEvent, Metric
from shared.infra.queue import job_ids_with_messages, redis_client
from shared.infra.storage import open_store
from shared.jobs import workers
from shared.spec import parse_spec
from tests.conftest import ROOT, wait_until, worker_env
from tests.helpers import tiny_spec
from worker.procs import trainer_pids
from worker.reconciler import Reconciler
from worker.trainer import Reporter, train

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]
TERMINAL = {"succeeded", "failed", "cancelled", "pruned"}

# Long enough to be interrupted (~200 steps), small enough to finish in a few seconds.
LONG = {
    "training": {"epochs": 8, "lr": 0.01, "log_every_steps": 1, "deterministic": True},
    "checkpoint": {"every_steps": 10, "every_epochs": 1, "keep_last": 3},
    "resources": {"max_attempts": 3},
}


class Workers:
    """Worker processes on a private queue, with short leases and a fast reconciler."""

    def __init__(self, settings, tmp_path: Path) -> None:
        self.queue = f"recovery-{uuid.uuid4().hex[:8]}"
        self.settings = replace(settings, default_queue=self.queue)
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{name}.log"
        env = (
            worker_env(self.settings)
            | extra_env
            | {
                "SEQTRAIN_WORKER_NAME": name,
                "SEQTRAIN_WORKER_RECONCILER": "1",
                "SEQTRAIN_LEASE_SECONDS": "5",  # renewed each 0.5 s: room for a loaded machine
                "SEQTRAIN_HEARTBEAT_SECONDS": "0.5",
                "SEQTRAIN_RECONCILE_SECONDS": "0.5",
                "SEQTRAIN_ENQUEUE_GRACE_SECONDS": "2",
                "SEQTRAIN_VAR_DIR": str(self.tmp_path / "var"),
            }
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                worker_command(self.queue) + ["--hostname", f"{name}@%h"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: b" ready." in log_path.read_bytes() or proc.poll() is not None,
            60,
            message=f"worker {name} to start",
        )
        assert proc.poll() is None, log_path.read_text()[-3000:]
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                stop(proc, timeout=30)


@pytest.fixture
def pool(settings, db, tmp_path):
    workers_ = Workers(settings, tmp_path)
    yield workers_
    workers_.close()


class TrainerWatch:
    """Samples /proc while a test runs: the most trainer processes ever seen for a job."""

    def __init__(self, job_id: int, database_url: str) -> None:
        self.job_id, self.database_url, self.most = job_id, database_url, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.most = max(self.most, len(trainer_pids(self.job_id, self.database_url)))

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.most


def submit(client, queue: str, epochs: int | None = None) -> int:
    spec = tiny_spec(**LONG)
    spec["resources"]["queue"] = queue
    if epochs is not None:
        spec["training"]["epochs"] = epochs
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.json
    return response.json["id"]


def job_of(client, job_id: int) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}").json


def wait_for(client, job_id: int, statuses, timeout: float = 120.0) -> dict:
    return wait_until(
        lambda: (job := job_of(client, job_id))["status"] in statuses and job,
        timeout,
        message=f"job {job_id} to reach {statuses}",
    )


def wait_for_checkpoint(db, job_id: int, attempt: int = 1):
    return wait_until(
        lambda: (
            (c := jobs.latest_checkpoint(db, job_id)) is not None and c.attempt == attempt and c
        ),
        60,
        message=f"a checkpoint of job {job_id} attempt {attempt}",
    )


def resumed_steps(db, job_id: int) -> dict[int, int]:
    """attempt -> the checkpoint step it said it resumed from (its fenced event)."""
    with db.session() as session:
        events = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.message.like("resuming%"))
        ).all()
    return {e.attempt: int(e.message.split("step ")[1].split()[0]) for e in events}


def first_train_step(db, job_id: int, attempt: int) -> int:
    """The first optimizer step an attempt logged (per-step rows carry the learning rate;
    epoch-end rows repeat the epoch's last step)."""
    with db.session() as session:
        steps = session.scalars(
            select(Metric.step).where(
                Metric.job_id == job_id, Metric.attempt == attempt, Metric.name == "lr"
            )
        ).all()
    return min(steps)


def final_weights(settings, db, job_id: int) -> dict[str, torch.Tensor]:
    latest = jobs.latest_checkpoint(db, job_id)
    tensors = load(open_store(settings).get_bytes(latest.uri))
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def uninterrupted_weights(spec: dict, tmp_path: Path, splits=None) -> dict[str, torch.Tensor]:
    """The same spec trained in this process without interruption (same thread count), on
    `splits` (default: its built-in datasets)."""
    from shared.zoo.checkpoints import save_checkpoint

    saved: list[Path] = []

    def save(state, epoch, step, metrics, is_best=False):
        path = tmp_path / f"ref-{step}-{state['next_batch']}.safetensors"
        save_checkpoint(path, state)
        saved.append(path)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' trainers run with SEQTRAIN_TORCH_THREADS=1
    try:
        train(parse_spec(spec), Reporter(lambda *a: None, save), splits=splits)
    finally:
        torch.set_num_threads(threads)
    return {k: v for k, v in load_file(saved[-1]).items() if k.startswith("model.")}


def assert_same_weights(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def registered(db) -> dict:
    return {w.name: w for w in workers.list_workers(db, include_stopped=True)}


def test_a_killed_trainer_resumes_from_its_last_checkpoint(client, db, settings, pool, tmp_path):
    pool.start("w1")
    job_id = submit(client, pool.queue)
    watch = TrainerWatch(job_id, settings.database_url)
    checkpoint = wait_for_checkpoint(db, job_id)
    pids = trainer_pids(job_id, settings.database_url)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    job = wait_for(client, job_id, TERMINAL)
    assert watch.stop() == 1  # never two trainers for the job
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2
    messages = [e["message"] for e in job["events"]]
    assert any(m.startswith("trainer killed by signal 9") for m in messages), messages
    resumed = resumed_steps(db, job_id)
    assert resumed[2] >= checkpoint.step
    # Attempt 2 trains only the steps after its checkpoint: none twice beyond it.
    assert first_train_step(db, job_id, 2) == resumed[2] + 1
    spec = job_of(client, job_id)["spec"]
    assert_same_weights(final_weights(settings, db, job_id), uninterrupted_weights(spec, tmp_path))


def test_a_dead_worker_is_replaced_and_its_job_resumes(client, db, settings, pool):
    first = pool.start("w1")
    # Long enough to still be training once the second worker is up.
    job_id = submit(client, pool.queue, epochs=40)
    watch = TrainerWatch(job_id, settings.database_url)
    wait_for_checkpoint(db, job_id)
    pool.start("w2")
    assert job_of(client, job_id)["status"] == "running"
    first.send_signal(signal.SIGKILL)  # the whole worker, supervisor included
    first.wait()
    job = wait_for(client, job_id, TERMINAL)
    assert watch.stop() == 1
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2, [e["message"] for e in job["events"]]
    lost = [e for e in job["events"] if "lease expired" in e["message"]]
    assert len(lost) == 1 and lost[0]["to_status"] == "queued" and "w1" in lost[0]["message"]
    resumed = resumed_steps(db, job_id)
    assert first_train_step(db, job_id, 2) == resumed[2] + 1
    assert registered(db)["w2"].state == "up"
    assert registered(db)["w2"].current_job_id is None


def test_a_drained_worker_checkpoints_and_requeues_its_job(client, db, settings, pool):
    first = pool.start("w1")
    job_id = submit(client, pool.queue)
    wait_until(lambda: job_of(client, job_id)["step"] >= 3, 60, message="training to start")
    assert registered(db)["w1"].current_job_id == job_id
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    job = job_of(client, job_id)
    assert job["status"] == "queued" and job["attempt"] == 1
    assert "checkpointed and requeued" in job["events"][-1]["message"]
    drained_at = jobs.latest_checkpoint(db, job_id)
    assert drained_at.attempt == 1
    assert registered(db)["w1"].state == "stopped"
    pool.start("w2")
    job = wait_for(client, job_id, TERMINAL)
    assert job["status"] == "succeeded" and job["attempt"] == 2
    assert resumed_steps(db, job_id)[2] == drained_at.step
    assert first_train_step(db, job_id, 2) == drained_at.step + 1


def test_jobs_whose_messages_redis_lost_are_enqueued_again_and_run_once(client, db, pool, accounts):
    pool.start("w1")
    redis = redis_client(pool.settings.redis_url)
    spec = parse_spec(tiny_spec(training={"epochs": 1}, resources={"queue": pool.queue}))
    # Stored but never enqueued: what a flushed or restarted Redis leaves behind.
    owner = accounts["alice"].user_id
    lost = [jobs.create_job(db, spec, owner_id=owner).id for _ in range(3)]
    assert not job_ids_with_messages(redis, {pool.queue: lost}, 60)
    for job_id in lost:
        job = wait_for(client, job_id, TERMINAL, timeout=60)
        assert job["status"] == "succeeded" and job["attempt"] == 1
        claims = [e for e in job["events"] if e["to_status"] == "running"]
        assert len(claims) == 1


def test_reconciler_requeues_expired_leases_then_gives_up(db, settings, reconciler_alone):
    reconciler = Reconciler(db, replace(settings, default_queue=f"nobody-{uuid.uuid4().hex[:6]}"))
    spec = parse_spec(
        tiny_spec(resources={"queue": f"nobody-{uuid.uuid4().hex[:6]}", "max_attempts": 2})
    )
    job = jobs.create_job(db, spec, owner_id=None)
    redis = redis_client(settings.redis_url)
    for attempt in (1, 2):
        assert jobs.claim(db, job.id, "gone", lease_seconds=0.05) == attempt
        time.sleep(0.1)
        reconciler.run_once(force=True)
    job = jobs.get_job(db, job.id)
    assert job.status == "failed" and "attempt 2 of 2; giving up" in job.error
    events = [e.message for e in jobs.job_events(db, job.id)]
    assert any("(lease expired) on attempt 1 of 2; requeued" in m for m in events), events
    # The requeue put a message back on the job's queue.
    assert job_ids_with_messages(redis, {spec.resources.queue: [job.id]}, 60) == {job.id}
    # A zombie attempt 2 can write nothing once recovered.
    with pytest.raises(jobs.Fenced):
        jobs.write_metrics(db, job.id, 2, [], epoch=0, step=1)


def test_reconciler_leaves_live_leases_and_present_messages_alone(db, settings, reconciler_alone):
    queue = f"nobody-{uuid.uuid4().hex[:6]}"
    reconciler = Reconciler(db, replace(settings, enqueue_grace_seconds=0))
    spec = parse_spec(tiny_spec(resources={"queue": queue}))
    running = jobs.create_job(db, spec, owner_id=None)
    assert jobs.claim(db, running.id, "alive", lease_seconds=60) == 1
    waiting = jobs.create_job(db, spec, owner_id=None)
    first = reconciler.run_once(force=True)
    assert waiting.id in first.enqueued and running.id not in first.requeued
    second = reconciler.run_once(force=True)
    assert second.enqueued == []  # its message is on the queue now
    assert jobs.get_job(db, running.id).status == "running"


def test_max_runtime_fails_the_attempt_without_retry(client, db, pool):
    pool.start("w1")
    spec = tiny_spec(**LONG)
    spec["training"]["epochs"] = 100
    spec["resources"] = {"queue": pool.queue, "max_runtime_seconds": 2, "max_attempts": 3}
    job_id = client.post("/api/v1/jobs", json=spec).json["id"]
    job = wait_for(client, job_id, TERMINAL, timeout=60)
    assert job["status"] == "failed" and job["attempt"] == 1
    assert job["error"] == "max_runtime_seconds (2 s) exceeded"
    assert not trainer_pids(job_id, pool.settings.database_url)


def test_a_crashing_trainer_fails_with_its_traceback(client, db, store, pool, accounts):
    """An unreadable checkpoint makes the trainer crash: the job fails at once (a bug or
    corrupt state is not fixed by retrying) with the exit code and the traceback's end."""
    pool.start("w1")
    spec = parse_spec(tiny_spec(resources={"queue": pool.queue}))
    job = jobs.create_job(db, spec, owner_id=accounts["alice"].user_id)
    # Attempt 1 left a checkpoint whose file is garbage, then was requeued.
    assert jobs.claim(db, job.id, "earlier", 60) == 1
    key = f"jobs/{job.id}/checkpoints/step-000000005-end.safetensors"
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00not a safetensors header"
    size, sha256 = store.put_bytes(garbage, key)  # the right hash: the bytes are the fault
    jobs.add_checkpoint(
        db, job.id, 1, step=5, epoch=0, uri=key, sha256=sha256, size=size, metrics={}, keep_last=2
    )
    assert jobs.requeue(db, job.id, 1, "worker drained", "test")
    from shared.infra.queue import JobQueue

    JobQueue(pool.settings).enqueue_job(job.id, pool.queue)
    done = wait_for(client, job.id, TERMINAL, timeout=60)
    assert done["status"] == "failed" and done["attempt"] == 2
    assert done["error"].startswith("trainer crashed (exit code 1):")
    assert "Traceback" in done["error"] or "Error" in done["error"]
