"""Live logs and TensorBoard files when the API and the workers share no disk: the trainer's
log shipped from a local file into a Redis stream and archived in a real S3 store
(SeaweedFS on the loopback), read back through the API in chunks that join up to the exact
bytes; TensorBoard event files uploaded to the store and served as one tarball."""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import pytest
import redis

from api.logs import LOG_CHUNK_BYTES
from cli.services import S3Server, start_seaweedfs, stop
from shared import jobs
from shared.infra.storage import LocalStore, open_store
from shared.protocol import log_key, log_stream_key
from tests.conftest import authed_client, s3_settings, wait_until
from tests.helpers import tiny_spec
from tests.test_live import make_job
from worker import logship
from worker.logship import LogShipper, finish_log, trainer_log
from worker.tbevents import StoreEvents


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    proc, server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop(proc, timeout=5)  # then SIGKILL: its data is a temporary folder


@pytest.fixture
def s3(settings, s3_server: S3Server, monkeypatch, tmp_path):
    """`settings` with the artifacts under a fresh prefix of the bucket, this test's cache."""
    return s3_settings(
        settings,
        s3_server,
        monkeypatch,
        "logs",
        store_retry_seconds=2.0,
        cache_dir=tmp_path / "cache",
    )


@pytest.fixture
def s3_client(s3, db, accounts):
    """The API on the S3 store, signed in as alice."""
    from api import create_app

    application = create_app(s3, {"TESTING": True})
    yield authed_client(application, accounts["alice"])
    application.extensions["seqtrain"].db.dispose()
    application.extensions["seqtrain"].limiter.redis.close()


@pytest.fixture
def live(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def entries(live, stream: str) -> list[tuple[str, int, bytes]]:
    return [
        (entry_id.decode(), int(fields[b"offset"]), fields[b"data"])
        for entry_id, fields in live.xrange(stream)
    ]


def read_all(client, job_id: int, attempt: int, offset: int = 0) -> tuple[str, list[dict]]:
    """Follow the log from `offset` like `seqtrain logs -f` until a chunk brings nothing."""
    text, chunks = "", []
    for _ in range(100):
        chunk = client.get(f"/api/v1/jobs/{job_id}/logs?attempt={attempt}&offset={offset}").json
        chunks.append(chunk)
        assert chunk["offset"] == offset
        assert len(chunk["text"].encode()) <= LOG_CHUNK_BYTES and "\ufffd" not in chunk["text"]
        assert chunk["next_offset"] == offset + len(chunk["text"].encode())
        text, offset = text + chunk["text"], chunk["next_offset"]
        if not chunk["text"]:
            return text, chunks
    raise AssertionError("the log never ended")


# ---------------------------------------------------------------- the shipper


def test_the_shipper_follows_a_growing_file_into_the_stream_and_the_store(
    s3, redis_url, live, tmp_path
):
    store = open_store(s3)
    path, key, stream = tmp_path / "attempt.log", "jobs/1/logs/attempt-1.log", f"test:{uuid4()}"
    live.xadd(stream, {"offset": 0, "data": b"an earlier run"}, id="1-0")  # reset at start
    path.write_bytes(b"")
    shipper = LogShipper(store, redis_url, path, key, stream, ship_seconds=0.05, upload_seconds=0.5)
    shipper.start()
    written = b""
    # A multi-byte character split across writes, and a burst bigger than a chunk.
    for piece in (b"epoch 1 caf\xc3", b"\xa9\n", "é".encode() * 50_000 + b"\n", b"done\n"):
        with path.open("ab") as handle:
            handle.write(piece)
        written += piece
        size = len(written)
        wait_until(lambda size=size: shipper.shipped == size, 10, message="bytes shipped")
    wait_until(lambda: store.size(key) == len(written), 10, message="a periodic upload")
    assert shipper.finish() is True
    found = entries(live, stream)
    assert b"".join(data for _, _, data in found) == written
    assert all(entry_id == f"{offset + 1}-0" for entry_id, offset, _ in found)
    assert all(len(data) <= logship.CHUNK_BYTES for _, _, data in found)
    assert max(len(data) for _, _, data in found) == logship.CHUNK_BYTES
    assert store.get_bytes(key) == written
    assert 0 < live.ttl(stream) <= logship.EXPIRE_SECONDS


def test_redis_or_the_store_down_never_fail_the_shipper(s3, redis_url, live, tmp_path, monkeypatch):
    monkeypatch.setattr(logship, "FINAL_UPLOAD_TRIES", 2)
    path = tmp_path / "attempt.log"
    path.write_bytes(b"line\n")
    store = open_store(s3)
    no_redis = LogShipper(store, "redis://127.0.0.1:9/0", path, "jobs/2/logs/a.log", "test:2")
    assert no_redis.ship() == 0  # Redis unreachable: nothing sent, nothing raised
    assert no_redis.finish() is True and store.get_bytes("jobs/2/logs/a.log") == b"line\n"
    gone = open_store(replace(s3, s3_endpoint_url="http://127.0.0.1:9", store_retry_seconds=0))
    no_store = LogShipper(gone, redis_url, path, "jobs/2/logs/b.log", f"test:{uuid4()}")
    assert no_store.ship() == 5
    renewed = []
    finish_log(no_store, path, lambda: renewed.append(1), 0.1)  # logged, not raised
    assert renewed, "the lease was not renewed while the final upload waited"
    assert path.exists()  # not archived: the local copy stays, the stream keeps it a day
    assert store.size("jobs/2/logs/b.log") is None
    assert live.ttl(no_store.stream) > logship.EXPIRE_SECONDS


# ---------------------------------------------------------------- the API on an S3 store


def test_chunks_join_up_across_archive_and_stream(s3, s3_client, db, accounts, redis_url, live):
    job_id = make_job(db, accounts["alice"])
    attempt = jobs.claim(db, job_id, "w", 60)
    store, key = open_store(s3), log_key(job_id, attempt)
    path = Path(s3.cache_dir) / "attempt.log"
    path.parent.mkdir(parents=True)
    stream = log_stream_key(job_id, attempt)
    live.delete(stream)  # job ids restart with each test database
    shipper = LogShipper(store, redis_url, path, key, stream, upload_seconds=3600)
    # The archive ends inside a character ("é" is c3 a9); the rest is only in the stream.
    archived = b"x" * 3 + "é".encode() * 40_000 + b"\xc3"
    path.write_bytes(archived)
    assert shipper.upload(store) == len(archived)
    streamed = b"\xa9" + "naïve ünïcode €\n".encode() * 9_000
    with path.open("ab") as handle:
        handle.write(streamed)
    assert shipper.ship() == len(archived + streamed)
    whole = (archived + streamed).decode()

    text, chunks = read_all(s3_client, job_id, attempt)
    assert text == whole and len(chunks) > 3
    assert chunks[0]["attempts"] == [attempt]
    assert not any(chunk["complete"] for chunk in chunks)  # the attempt is still running

    # The attempt ends: the final upload comes first, then the stream goes.
    assert shipper.finish() is True
    jobs.finish(db, job_id, attempt, "succeeded", "training finished", "w")
    live.delete(stream)
    text, chunks = read_all(s3_client, job_id, attempt)
    assert text == whole
    # Complete from the chunk that reaches the end (then the empty one after it), not before.
    assert [chunk["complete"] for chunk in chunks] == [False] * (len(chunks) - 2) + [True, True]
    past = s3_client.get(f"/api/v1/jobs/{job_id}/logs?offset=99999999").json
    assert past["next_offset"] == len(archived + streamed) and past["complete"] is True


def test_a_running_attempts_tail_shows_within_a_second(s3, s3_client, db, accounts):
    # What the supervisor does: the child writes a local file, a shipper follows it.
    job_id = make_job(db, accounts["alice"])
    attempt = jobs.claim(db, job_id, "w", 60)
    path, shipper = trainer_log(s3, open_store(s3), job_id, attempt, 0)
    assert shipper is not None and path.is_relative_to(Path(s3.cache_dir))
    wait_until(
        lambda: s3_client.get(f"/api/v1/jobs/{job_id}/logs").json["attempts"] == [attempt],
        10,
        message="the attempt listed",
    )
    with path.open("ab") as handle:
        handle.write(b"step 10 loss 0.5\n")
    started = time.monotonic()
    wait_until(
        lambda: s3_client.get(f"/api/v1/jobs/{job_id}/logs").json["text"] == "step 10 loss 0.5\n",
        5,
        message="the live tail",
    )
    assert time.monotonic() - started < 3
    finish_log(shipper, path)
    assert not path.exists()  # the archive has it all
    assert open_store(s3).get_bytes(log_key(job_id, attempt)) == b"step 10 loss 0.5\n"


# ---------------------------------------------------------------- TensorBoard


def tarball_names(response) -> list[str]:
    assert response.status_code == 200 and response.mimetype == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.data)) as archive:
        return archive.getnames()


def test_event_files_are_uploaded_and_served_from_s3(s3, s3_client, db, accounts, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job_id = make_job(db, accounts["alice"])
    store = open_store(s3)
    events = StoreEvents(store, f"jobs/{job_id}/tensorboard/attempt-1")
    events.add_scalars([("train/loss", 1, 0.75), ("train/loss", 2, 0.5)])
    events.sync(force=True)  # a checkpoint
    assert store.get_bytes(events.key) == events.writer.path.read_bytes()
    events.add_scalars([("train/loss", 3, 0.25)])
    events.sync()  # within UPLOAD_SECONDS of the last: nothing goes
    assert store.size(events.key) < events.writer.path.stat().st_size
    events.close()
    assert events.scratch is not None and not events.scratch.exists()
    store.put_bytes(b"not an event file", f"jobs/{job_id}/tensorboard/notes.txt")

    response = s3_client.get(f"/api/v1/jobs/{job_id}/tensorboard")
    names = tarball_names(response)
    assert names == [f"job-{job_id}/attempt-1/{Path(events.key).name}"]
    with tarfile.open(fileobj=io.BytesIO(response.data)) as archive:
        archive.extractall(tmp_path, filter="data")
    accumulator = EventAccumulator(str(tmp_path / f"job-{job_id}" / "attempt-1"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3]


def test_a_local_store_gets_the_event_file_in_place(tmp_path):
    store = LocalStore(tmp_path)
    events = StoreEvents(store, "jobs/3/tensorboard/attempt-2")
    events.add_scalars([("val/accuracy", 1, 0.9)])
    assert events.scratch is None
    assert events.writer.path.parent == tmp_path / "jobs/3/tensorboard/attempt-2"
    events.close()
    assert [info.key for info in store.list("jobs/3/tensorboard/")] == [events.key]


# ---------------------------------------------------------------- a real worker on S3


@pytest.mark.e2e
def test_a_worker_on_s3_ships_its_log_and_event_files(s3, s3_client, db, tmp_path, live):
    from tests.test_recovery import TERMINAL, Workers, wait_for

    pool = Workers(s3, tmp_path)
    try:
        pool.start("shipper", SEQTRAIN_CACHE_DIR=str(s3.cache_dir))
        spec = tiny_spec(
            training={"epochs": 2, "tensorboard": True}, resources={"queue": pool.queue}
        )
        created = s3_client.post("/api/v1/jobs", json=spec)
        assert created.status_code == 201, created.json
        job_id = created.json["id"]
        job = wait_for(s3_client, job_id, TERMINAL)
    finally:
        pool.close()
    assert job["status"] == "succeeded", job["error"]
    # Seen ended, so the archive is whole; the stream expires; the local copy is gone.
    stream = log_stream_key(job_id, 1)
    assert 0 < live.ttl(stream) <= logship.EXPIRE_SECONDS
    archive = open_store(s3).get_bytes(log_key(job_id, 1)).decode()
    assert "done: step" in archive and "checkpoint jobs/" in archive
    assert not list(Path(s3.cache_dir, "logs").rglob("*.log"))
    live.delete(stream)
    text, chunks = read_all(s3_client, job_id, 1)
    assert text == archive and chunks[-1]["complete"]
    names = tarball_names(s3_client.get(f"/api/v1/jobs/{job_id}/tensorboard"))
    assert len(names) == 1 and names[0].startswith(f"job-{job_id}/attempt-1/events.out.tfevents.")
