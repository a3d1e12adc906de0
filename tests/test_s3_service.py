"""Workers on machines that share no filesystem: the artifacts in a real S3 server
(SeaweedFS on the loopback), each worker with its own cache and var directory, the API
reading everything from the store. A job killed on one worker resumes on the other from the
checkpoint in the store; a two-node job runs the same way; a store that goes down during
training delays the checkpoint writes, and the job succeeds with nothing lost."""

from __future__ import annotations

import hashlib
import signal
import threading
import time

import pytest

from cli.services import start_seaweedfs, stop_seaweedfs
from shared import jobs
from shared.data.examples import load_splits
from shared.infra.storage import open_store
from shared.spec import parse_spec
from tests.conftest import s3_settings, wait_until
from tests.helpers import tiny_spec, upload
from tests.test_multinode import Placement
from tests.test_recovery import (
    LONG,
    TERMINAL,
    TrainerWatch,
    Workers,
    assert_same_weights,
    first_train_step,
    registered,
    resumed_steps,
    uninterrupted_weights,
    wait_for,
    wait_for_checkpoint,
)

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]
# 800 rows: ~25 steps an epoch, long enough to be interrupted.
FILMS = b"sentence\tlabel\n" + b"".join(
    f"{adj} film number {i}\t{label}\n".encode()
    for i in range(400)
    for adj, label in (("great", "pos"), ("awful", "neg"))
)


@pytest.fixture
def s3(settings, s3_server, monkeypatch):
    return s3_settings(settings, s3_server, monkeypatch, "isolated")


@pytest.fixture
def app(s3, db):  # the API reads the same bucket
    from api import create_app

    application = create_app(s3, {"TESTING": True})
    yield application
    application.extensions["seqtrain"].db.dispose()


class Hosts(Workers):
    """Workers that each have their own cache and var directory: nothing on disk is shared."""

    def start_host(self, name: str, **extra_env: str):
        home = self.tmp_path / f"host-{name}"
        return self.start(
            name,
            SEQTRAIN_CACHE_DIR=str(home / "cache"),
            SEQTRAIN_VAR_DIR=str(home / "var"),
            **extra_env,
        )


@pytest.fixture
def hosts(s3, db, tmp_path):
    pool = Hosts(s3, tmp_path)
    yield pool
    pool.close()


def dataset_spec(client, queue: str, **sections) -> dict:
    created = upload(
        client, FILMS, "films.tsv", format="tsv", text_column="sentence", label_column="label"
    )
    assert created.status_code in (200, 201), created.json
    spec = tiny_spec(**LONG)
    for section, values in sections.items():
        spec[section].update(values)
    spec["data"] = {"dataset": f"dataset:{created.json['id']}", "max_length": 32}
    spec["resources"]["queue"] = queue
    return spec


def test_a_job_killed_on_one_host_resumes_on_another_from_the_store(
    client, db, s3, hosts, tmp_path
):
    first = hosts.start_host("host-a")
    spec = dataset_spec(client, hosts.queue, training={"epochs": 30})
    created = client.post("/api/v1/jobs", json=spec)
    assert created.status_code == 201, created.json
    job_id = created.json["id"]
    watch = TrainerWatch(job_id, s3.database_url)
    wait_for_checkpoint(db, job_id)
    hosts.start_host("host-b")
    first.send_signal(signal.SIGKILL)  # the whole worker: its trainer dies with it
    first.wait()
    job = wait_for(client, job_id, TERMINAL, timeout=180)
    assert watch.stop() == 1
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2
    resumed = resumed_steps(db, job_id)
    assert first_train_step(db, job_id, 2) == resumed[2] + 1  # nothing trained twice
    # The second host read the dataset and the checkpoint from the store, into its own cache.
    assert any((tmp_path / "host-host-b" / "cache").rglob("*")), "host-b cached nothing"
    final = jobs.latest_checkpoint(db, job_id)
    store = open_store(s3)
    with store.local_copy(final.uri, tmp_path) as path:
        from safetensors.torch import load_file

        got = {k: v for k, v in load_file(path).items() if k.startswith("model.")}
    splits = load_splits(parse_spec(job["spec"]), store, jobs.dataset_links(db, job_id))
    assert_same_weights(got, uninterrupted_weights(job["spec"], tmp_path, splits))
    # The API serves the checkpoint and both attempts' logs from the store.
    download = client.get(f"/api/v1/jobs/{job_id}/checkpoints/{final.id}/download")
    if download.status_code == 302:  # a presigned URL: the store serves it
        body = store.get_bytes(final.uri)
    else:
        assert download.status_code == 200, download.json
        body = download.get_data()
    assert hashlib.sha256(body).hexdigest() == download.headers["X-Checksum-SHA256"] == final.sha256
    for attempt in (1, 2):
        text, offset = "", 0
        while True:
            chunk = client.get(f"/api/v1/jobs/{job_id}/logs?attempt={attempt}&offset={offset}")
            assert chunk.status_code == 200, chunk.json
            text += chunk.json["text"]
            offset = chunk.json["next_offset"]
            if chunk.json["complete"] or not chunk.json["text"]:
                break
        assert chunk.json["complete"] or attempt == 1, chunk.json
        assert "checkpoint jobs/" in text, text[-2000:]
    assert chunk.json["attempts"] == [1, 2]


def test_a_two_node_job_runs_across_hosts_that_share_no_directory(client, db, s3, hosts):
    hosts.start_host("mn-a")
    hosts.start_host("mn-b")
    wait_until(lambda: {"mn-a", "mn-b"} <= set(registered(db)), 30, message="both registered")
    spec = tiny_spec(
        training={"epochs": 2, "log_every_steps": 1},
        resources={"queue": hosts.queue, "nodes": 2},
    )
    created = client.post("/api/v1/jobs", json=spec)
    assert created.status_code == 201, created.json
    job_id = created.json["id"]
    placement = Placement(db, job_id)
    job = wait_for(client, job_id, TERMINAL, timeout=180)
    placement.stop()
    assert job["status"] == "succeeded", job["error"]
    assert placement.workers == {"mn-a", "mn-b"}
    store = open_store(s3)
    log = store.get_bytes(f"jobs/{job_id}/logs/attempt-1.log").decode()
    assert "(world size 2)" in log, log[-3000:]
    assert store.exists(f"jobs/{job_id}/logs/attempt-1-node-1.log")
    final = jobs.latest_checkpoint(db, job_id)
    assert hashlib.sha256(store.get_bytes(final.uri)).hexdigest() == final.sha256


@pytest.fixture
def flaky_store(settings, db, tmp_path, monkeypatch):
    """A SeaweedFS of this test's own, which the test stops and starts again."""
    folder = tmp_path / "seaweedfs"
    proc, server = start_seaweedfs(folder)
    state = {"proc": proc}
    yield s3_settings(settings, server, monkeypatch, "flaky"), server, folder, state
    stop_seaweedfs(state["proc"])


def test_the_store_stopped_during_training_delays_checkpoints_and_loses_nothing(
    db, flaky_store, tmp_path
):
    from api import create_app

    s3, server, folder, state = flaky_store
    app = create_app(s3, {"TESTING": True})
    from tests.conftest import authed_client

    accounts = _accounts(db)
    client = authed_client(app, accounts)
    pool = Hosts(s3, tmp_path)
    try:
        pool.start_host("steady")
        spec = tiny_spec(**LONG)
        spec["training"]["epochs"] = 10
        spec["checkpoint"] = {"every_steps": 5, "every_epochs": 1, "keep_last": 50}
        spec["resources"]["queue"] = pool.queue
        created = client.post("/api/v1/jobs", json=spec)
        assert created.status_code == 201, created.json
        job_id = created.json["id"]
        wait_for_checkpoint(db, job_id)
        stop_seaweedfs(state["proc"])  # the store goes away mid-training ...
        outage = threading.Event()

        def restart() -> None:
            time.sleep(5)  # ... for 5 s, then comes back where it was
            state["proc"], _ = start_seaweedfs(folder, ports=server.ports)
            outage.set()

        threading.Thread(target=restart, daemon=True).start()
        job = wait_for(client, job_id, TERMINAL, timeout=240)
        assert outage.is_set()
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 1  # ridden out inside the attempt, not requeued
        store = open_store(s3)
        rows = jobs.list_checkpoints(db, job_id)
        # 640 examples / 32 = 20 steps an epoch, a checkpoint every 5 steps: none lost.
        assert sorted({row.step for row in rows}) == list(range(5, 201, 5))
        for row in rows:
            assert hashlib.sha256(store.get_bytes(row.uri)).hexdigest() == row.sha256
        log = store.get_bytes(f"jobs/{job_id}/logs/attempt-1.log").decode()
        assert "artifact store unavailable" in log, log[-3000:]
    finally:
        pool.close()
        app.extensions["seqtrain"].db.dispose()


def _accounts(db):
    from shared.auth import create_token, create_user
    from tests.conftest import Account

    user = create_user(db, "carol")
    _, token = create_token(db, "carol")
    return Account("carol", user.id, token, False)


def test_an_ended_attempts_log_is_served_from_the_store_alone(client, db, s3, hosts):
    hosts.start_host("logger")
    spec = tiny_spec(training={"epochs": 1}, resources={"queue": hosts.queue})
    created = client.post("/api/v1/jobs", json=spec)
    job_id = created.json["id"]
    job = wait_for(client, job_id, TERMINAL)
    assert job["status"] == "succeeded", job["error"]
    wait_until(lambda: open_store(s3).exists(f"jobs/{job_id}/logs/attempt-1.log"), 10)
    from shared.infra.queue import redis_client

    redis = redis_client(s3.redis_url)
    for key in redis.scan_iter(f"seqtrain:log:{job_id}:*"):
        redis.delete(key)  # the live stream is gone: the archive has everything
    chunk = client.get(f"/api/v1/jobs/{job_id}/logs?attempt=1").json
    assert chunk["complete"] and "done: step" in chunk["text"], chunk
