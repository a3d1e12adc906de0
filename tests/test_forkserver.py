"""Single-device trainers start as children of the worker's warm fork-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.protocol import RANK_DIR_ENV
from tests.conftest import wait_until
from tests.helpers import tiny_spec
from tests.test_recovery import TERMINAL, Workers, job_of, wait_for
from worker.forkserver.client import ForkServer
from worker.procs import trainer_pids

pytestmark = pytest.mark.e2e


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def pool(settings, db, tmp_path, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("runs once, on SQLite: how a trainer starts does not depend on the database")
    workers = Workers(settings, tmp_path)
    yield workers
    workers.close()


def wait_warm(tmp_path: Path, name: str) -> None:
    log = tmp_path / "var" / "logs" / f"forkserver-{name}.log"
    wait_until(
        lambda: log.exists() and b"fork-server ready" in log.read_bytes(),
        60,
        message="the fork-server to warm up",
    )


def long_spec(queue: str) -> dict:
    return tiny_spec(training={"epochs": 30, "log_every_steps": 1}, resources={"queue": queue})


def test_a_job_trains_in_a_forked_child_of_the_warm_server(client, settings, pool, tmp_path):
    pool.start("w1")
    wait_warm(tmp_path, "w1")
    job_id = client.post("/api/v1/jobs", json=long_spec(pool.queue)).json["id"]
    wait_until(lambda: job_of(client, job_id)["step"] >= 1, 60, message="the first step")
    (pid,) = trainer_pids(job_id, settings.database_url)
    assert cmdline(pid).startswith(f"python -m worker.trainer --job-id {job_id} --attempt 1")
    assert "(forked)" in cmdline(pid)
    assert "worker.forkserver" in cmdline(parent_of(pid))
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    job = wait_for(client, job_id, TERMINAL, timeout=30)
    assert job["status"] == "cancelled"
    wait_until(lambda: not trainer_pids(job_id, settings.database_url), 10, message="exit")


def test_without_the_fork_server_a_plain_child_trains(client, settings, pool):
    pool.start("w1", SEQTRAIN_FORKSERVER="0")
    spec = long_spec(pool.queue)
    spec["training"]["epochs"] = 2
    job_id = client.post("/api/v1/jobs", json=spec).json["id"]
    wait_until(
        lambda: (
            trainer_pids(job_id, settings.database_url)
            or job_of(client, job_id)["status"] in TERMINAL
        ),
        60,
        interval=0.01,
        message="the trainer",
    )
    pids = trainer_pids(job_id, settings.database_url)
    assert not pids or "(forked)" not in cmdline(pids[0])
    assert wait_for(client, job_id, TERMINAL)["status"] == "succeeded"


def test_a_forked_trainer_ends_as_a_fresh_one_does(tmp_path):
    """The child runs the trainer's whole entry point: its exit file is written (what
    worker.launch reads) and its exit code comes back to the supervisor."""
    server = ForkServer(tmp_path / "forkserver.log")
    try:
        wait_until(server.ready, 60, message="the fork-server to warm up")
        env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", RANK_DIR_ENV: str(tmp_path)}
        trainer = server.start_trainer(1, 1, env, tmp_path / "trainer.log")
        assert trainer is not None
        code = trainer.wait(timeout=60)
        assert code > 0, (tmp_path / "trainer.log").read_text()  # there is no job 1
        assert (tmp_path / "rank-0.exit").read_text() == str(code)
        assert (tmp_path / "rank-0.pid").read_text() == str(trainer.pid)
    finally:
        server.stop()
