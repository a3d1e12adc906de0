"""A two-device job through the whole service: the supervisor launches torchrun's agent
with two gloo ranks, rank 0 alone writes, and cancel stops every rank."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from shared.infra.models import Metric
from tests.conftest import wait_until
from tests.helpers import tiny_spec
from tests.test_recovery import TERMINAL, TrainerWatch, Workers, job_of, wait_for

pytestmark = pytest.mark.e2e


def rank_pids(job_id: int, database_url: str) -> list[int]:
    from worker.procs import trainer_pids

    return trainer_pids(job_id, database_url)


@pytest.fixture
def two_device_worker(settings, db, tmp_path, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("runs once, on SQLite: the launch path does not depend on the database")
    pool = Workers(settings, tmp_path)
    pool.start("ddp-w1", SEQTRAIN_WORKER_DEVICES="2", SEQTRAIN_TORCH_THREADS="1")
    yield pool
    pool.close()


def spec(queue: str, **training) -> dict:
    made = tiny_spec(
        training={"epochs": 2, "log_every_steps": 2, **training},
        resources={"queue": queue, "devices": 2},
    )
    return made


def test_a_two_device_job_trains_with_two_ranks(client, db, settings, two_device_worker):
    created = client.post("/api/v1/jobs", json=spec(two_device_worker.queue))
    assert created.status_code == 201, created.json
    job_id = created.json["id"]
    watch = TrainerWatch(job_id, settings.database_url)
    job = wait_for(client, job_id, TERMINAL)
    assert job["status"] == "succeeded", job["error"]
    assert watch.stop() == 2  # two ranks of this job ran at once
    with db.session() as session:
        rows = session.execute(
            select(Metric.step, Metric.name, func.count())
            # Names only the per-step rows carry (epoch-end rows repeat loss at that step).
            .where(Metric.job_id == job_id, Metric.name.in_(("lr", "grad_norm")))
            .group_by(Metric.step, Metric.name)
        ).all()
    assert rows and all(count == 1 for _, _, count in rows)  # rank 0 alone reports


def test_cancel_stops_every_rank(client, db, settings, two_device_worker):
    created = client.post("/api/v1/jobs", json=spec(two_device_worker.queue, epochs=50))
    job_id = created.json["id"]
    wait_until(lambda: job_of(client, job_id)["step"] >= 2, 120, message="training to start")
    assert len(rank_pids(job_id, settings.database_url)) == 2
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    job = wait_for(client, job_id, TERMINAL, timeout=30)
    assert job["status"] == "cancelled"
    wait_until(lambda: not rank_pids(job_id, settings.database_url), 10, message="ranks to exit")
