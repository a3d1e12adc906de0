"""Multi-node jobs through the whole service, with two real worker processes on one machine:
all nodes reserved before any rank starts (or none, and the job is given back), one DDP run
across the workers with rank 0 alone writing, and cancel stopping every node's ranks."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from sqlalchemy import func, select

from cli.services import stop
from shared import jobs
from shared.infra.models import JobEvent, JobNode, Metric, Worker
from shared.jobs import nodes
from tests.conftest import wait_until
from tests.helpers import tiny_spec
from tests.test_recovery import TERMINAL, TrainerWatch, Workers, job_of, wait_for
from worker.procs import trainer_pids

pytestmark = pytest.mark.e2e


@pytest.fixture
def pool(settings, db, tmp_path, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("runs once, on SQLite: shared.jobs.nodes is tested on both backends")
    workers_ = Workers(settings, tmp_path)
    yield workers_
    workers_.close()


def spec(queue: str, epochs: int = 3, **resources) -> dict:
    return tiny_spec(
        training={"epochs": epochs, "log_every_steps": 1},
        resources={"queue": queue, "nodes": 2, **resources},
    )


class Placement:
    """Samples SQL while a job runs: the workers that ever showed the job as their current
    job, and the node rows of its first attempt."""

    def __init__(self, db, job_id: int) -> None:
        self.db, self.job_id = db, job_id
        self.workers: set[str] = set()
        self.rows: set[tuple[int, str]] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(0.05):
            with self.db.session() as session:
                self.workers |= set(
                    session.scalars(select(Worker.name).where(Worker.current_job_id == self.job_id))
                )
                self.rows |= {
                    (row.node_rank, row.worker)
                    for row in session.scalars(select(JobNode).where(JobNode.job_id == self.job_id))
                }

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def test_a_two_node_job_trains_across_two_workers(client, db, settings, store, pool):
    pool.start("mn-a")
    pool.start("mn-b")
    created = client.post("/api/v1/jobs", json=spec(pool.queue))
    assert created.status_code == 201, created.json
    job_id = created.json["id"]
    ranks, placement = TrainerWatch(job_id, settings.database_url), Placement(db, job_id)
    job = wait_for(client, job_id, TERMINAL)
    placement.stop()
    assert job["status"] == "succeeded", job["error"]
    assert ranks.stop() == 2  # one rank on each worker, alive at once
    assert placement.workers == {"mn-a", "mn-b"}
    assert {rank for rank, _ in placement.rows} == {0, 1}
    assert {worker for _, worker in placement.rows} == {"mn-a", "mn-b"}
    assert nodes.count(db, job_id, 1) == 0  # released when the attempt ended
    with db.session() as session:
        rows = session.execute(
            select(Metric.step, Metric.name, func.count())
            .where(Metric.job_id == job_id, Metric.name.in_(("lr", "grad_norm")))
            .group_by(Metric.step, Metric.name)
        ).all()
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert rows and all(count == 1 for _, _, count in rows)  # global rank 0 alone reports
    assert any(m.startswith("all 2 workers reserved") for m in events), events
    log = store.get_bytes(f"jobs/{job_id}/logs/attempt-1.log").decode()
    assert "trained) on cpu (world size 2)" in log, log[-3000:]
    # 640 examples in global batches of 2 x 32: ten steps an epoch.
    assert job["step"] == 30
    assert store.exists(f"jobs/{job_id}/logs/attempt-1-node-1.log")


def test_a_reservation_waits_for_a_busy_worker_and_starts_when_it_frees(client, db, settings, pool):
    pool.start("mn-busy", SEQTRAIN_RESERVE_SECONDS="1")
    pool.start("mn-idle", SEQTRAIN_RESERVE_SECONDS="1")
    # One of the two workers is busy with a long single-node job.
    busy = client.post("/api/v1/jobs", json=spec(pool.queue, epochs=500, nodes=1)).json["id"]
    wait_until(lambda: job_of(client, busy)["step"] >= 1, 120, message="the long job to start")
    created = client.post("/api/v1/jobs", json=spec(pool.queue, max_attempts=1))
    assert created.status_code == 201, created.json  # two workers fit it: accepted
    job_id = created.json["id"]
    ranks = TrainerWatch(job_id, settings.database_url)
    wait_until(lambda: nodes.count(db, job_id, 1) == 1, 30, message="node 0 reserved")
    # Well past SEQTRAIN_RESERVE_SECONDS the reservation holds: the busy worker is live and
    # will join it when its job ends; nothing has started meanwhile.
    time.sleep(3)
    assert job_of(client, job_id)["status"] == "running"
    assert nodes.count(db, job_id, 1) == 1
    assert ranks.most == 0
    assert client.post(f"/api/v1/jobs/{busy}/cancel").status_code == 202
    job = wait_for(client, job_id, TERMINAL, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert ranks.stop() == 2
    assert job["attempt"] == 1


def test_with_too_few_live_workers_the_job_waits_queued_holding_nothing(client, db, settings, pool):
    pool.start("mn-stays", SEQTRAIN_RESERVE_SECONDS="1")
    leaving = pool.start("mn-leaves", SEQTRAIN_RESERVE_SECONDS="1")
    stop(leaving, timeout=30)  # registered, so the job is accepted, but stopped
    created = client.post("/api/v1/jobs", json=spec(pool.queue, max_attempts=1))
    assert created.status_code == 201, created.json
    job_id = created.json["id"]
    ranks = TrainerWatch(job_id, settings.database_url)
    # Messages come and go (the reconciler enqueues it again); the one live worker never
    # claims a job it cannot start, so it neither holds a worker nor uses an attempt.
    time.sleep(5)
    job = job_of(client, job_id)
    assert (job["status"], job["attempt"]) == ("queued", 0)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(JobNode)) == 0
    pool.start("mn-comes", SEQTRAIN_RESERVE_SECONDS="1")
    job = wait_for(client, job_id, TERMINAL, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert ranks.stop() == 2


def test_two_multi_node_jobs_on_three_workers_both_finish(client, db, settings, pool):
    """Each job needs two of the three workers: reserved one round at a time, in rank
    order, neither holds a worker the other needs and waits forever."""
    for name in ("mn-x", "mn-y", "mn-z"):
        pool.start(name, SEQTRAIN_RESERVE_SECONDS="2")
    ids = [
        client.post("/api/v1/jobs", json=spec(pool.queue, epochs=2, max_attempts=1)).json["id"]
        for _ in range(2)
    ]
    done = [wait_for(client, job_id, TERMINAL, timeout=240) for job_id in ids]
    assert [job["status"] for job in done] == ["succeeded", "succeeded"], [
        job["error"] for job in done
    ]
    assert [job["attempt"] for job in done] == [1, 1]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(JobNode)) == 0


def test_cancel_stops_the_ranks_on_every_node(client, db, settings, pool):
    pool.start("mn-c")
    pool.start("mn-d")
    created = client.post("/api/v1/jobs", json=spec(pool.queue, epochs=200))
    job_id = created.json["id"]
    wait_until(lambda: job_of(client, job_id)["step"] >= 2, 120, message="training to start")
    assert len(trainer_pids(job_id, settings.database_url)) == 2
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    job = wait_for(client, job_id, TERMINAL, timeout=30)
    assert job["status"] == "cancelled"
    wait_until(lambda: not trainer_pids(job_id, settings.database_url), 15, message="ranks to exit")
    wait_until(lambda: nodes.count(db, job_id, 1) == 0, 15, message="node rows released")


def test_when_node_0_dies_the_other_node_stops_and_the_job_resumes(client, db, settings, pool):
    reserve = {"SEQTRAIN_RESERVE_SECONDS": "30"}
    started = {"mn-e": pool.start("mn-e", **reserve), "mn-f": pool.start("mn-f", **reserve)}
    made = spec(pool.queue, epochs=40)
    made["checkpoint"] = {"every_steps": 5, "every_epochs": 1, "keep_last": 2}
    job_id = client.post("/api/v1/jobs", json=made).json["id"]
    ranks = TrainerWatch(job_id, settings.database_url)
    wait_until(
        lambda: (c := jobs.latest_checkpoint(db, job_id)) is not None and c.step >= 5,
        120,
        message="a checkpoint",
    )
    first = {n.node_rank: n.worker for n in nodes.members(db, job_id, 1)}
    assert set(first.values()) == {"mn-e", "mn-f"}
    dead = started[first[0]]
    dead.send_signal(signal.SIGKILL)  # node 0's whole worker: its ranks die with it
    dead.wait()
    # The other node's ranks stop (their collectives fail, or the attempt is taken back).
    wait_until(lambda: not trainer_pids(job_id, settings.database_url), 30, message="ranks gone")
    pool.start("mn-g", **reserve)  # a replacement: two idle workers again
    job = wait_for(client, job_id, TERMINAL, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    assert ranks.stop() == 2  # never a rank of the lost attempt beside the new ones
    assert job["attempt"] == 2
    lost = [e for e in job["events"] if "lease expired" in e["message"]]
    assert len(lost) == 1 and first[0] in lost[0]["message"]
    second = {n.node_rank: n.worker for n in nodes.members(db, job_id, 2)}
    assert second == {}  # released when the attempt ended
    assert any(e["message"].startswith("resuming from checkpoint") for e in job["events"])
