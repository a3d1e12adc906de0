"""The artifact store's contract, on a directory (LocalStore) and on a real S3 server
(S3Store on SeaweedFS on the loopback): commit then read, large multipart objects, invalid
keys, staged files and orphans, and an S3 store that rides out its server being stopped and
started again, or reports clearly that it cannot be reached."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from cli.services import S3Server, free_port, start_seaweedfs, stop
from shared.infra.s3 import PART_BYTES, S3Store
from shared.infra.storage import (
    ArtifactMissing,
    ArtifactStore,
    LocalStore,
    StoreError,
    open_store,
)
from shared.settings import Settings
from tests.conftest import store_kind, worker_env

HOUR = 3600.0


def s3_store(
    server: S3Server, scratch: Path, monkeypatch: pytest.MonkeyPatch, **options: float
) -> S3Store:
    """A store under a fresh prefix of `server`'s bucket, with the server's credentials."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    url = f"s3://seqtrain/contract-{uuid.uuid4().hex}"
    return S3Store(url, scratch, endpoint_url=server.endpoint_url, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
def artifacts(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ArtifactStore:
    """Each kind of store, empty."""
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    return s3_store(request.getfixturevalue("s3_server"), tmp_path / "scratch", monkeypatch)


@pytest.fixture
def remote(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    return s3_store(s3_server, tmp_path / "scratch", monkeypatch)


def commit_bytes(store: ArtifactStore, data: bytes, key: str) -> tuple[int, str]:
    staging = store.staging_path(key)
    staging.write_bytes(data)
    return store.commit(staging, key)


# ------------------------------------------------------------------- the contract


def test_commit_then_read(artifacts: ArtifactStore):
    data = b"0123456789" * 10
    key = "jobs/1/checkpoints/step-1.safetensors"
    before = time.time()
    assert commit_bytes(artifacts, data, key) == (100, hashlib.sha256(data).hexdigest())
    assert artifacts.exists(key) and artifacts.size(key) == 100
    with artifacts.open(key) as handle:
        assert handle.read() == data
    assert artifacts.get_bytes(key) == data
    assert artifacts.read_range(key, 0, 4) == b"0123"
    assert artifacts.read_range(key, 95, 10) == b"56789"  # fewer at the end
    assert artifacts.read_range(key, 100, 5) == b""  # at the end
    assert artifacts.read_range(key, 500, 5) == b""  # past it
    assert artifacts.read_range(key, 3, 0) == b""
    [info] = artifacts.list("jobs/1/checkpoints/")
    assert (info.key, info.size) == (key, 100)
    assert before - 5 <= info.modified <= time.time() + 5
    # Replacing an object is atomic too: the new bytes, whole.
    assert commit_bytes(artifacts, b"new", key)[0] == 3
    assert artifacts.get_bytes(key) == b"new"


def test_missing_objects(artifacts: ArtifactStore, tmp_path: Path):
    key = "datasets/" + "0" * 64
    assert not artifacts.exists(key) and artifacts.size(key) is None
    for read in (
        lambda: artifacts.open(key),
        lambda: artifacts.get_bytes(key),
        lambda: artifacts.read_range(key, 0, 10),
        lambda: artifacts.download(key, tmp_path / "copy"),
    ):
        with pytest.raises(ArtifactMissing):
            read()
    assert not (tmp_path / "copy").exists()
    with pytest.raises(FileNotFoundError):  # ArtifactMissing is one
        artifacts.get_bytes(key)
    artifacts.delete(key)  # nothing to delete: no error
    assert artifacts.list("datasets/") == [] and artifacts.list("") == []


def test_list_by_prefix_and_delete(artifacts: ArtifactStore):
    keys = ["jobs/1/a.log", "jobs/1/logs/attempt-1.log", "jobs/10/a.log", "jobs/2/b", "models/m"]
    for key in keys:
        artifacts.put_bytes(key.encode(), key)
    assert [i.key for i in artifacts.list("jobs/1/")] == keys[:2]
    assert [i.key for i in artifacts.list("jobs/1")] == keys[:3]  # a prefix, not a folder
    assert [i.key for i in artifacts.list("jobs/")] == keys[:4]
    assert [i.key for i in artifacts.list("")] == keys
    assert {i.key: i.size for i in artifacts.list("")} == {k: len(k) for k in keys}
    artifacts.delete("jobs/2/b")
    assert not artifacts.exists("jobs/2/b") and artifacts.exists("jobs/1/a.log")
    assert artifacts.delete_prefix("jobs/1/") == 2
    assert [i.key for i in artifacts.list("")] == ["jobs/10/a.log", "models/m"]


def test_a_multipart_sized_object_round_trips(artifacts: ArtifactStore, tmp_path: Path):
    data = os.urandom(PART_BYTES + (1 << 20) + 123)  # two parts in a bucket
    digest = hashlib.sha256(data).hexdigest()
    key = "jobs/3/checkpoints/big.safetensors"
    assert commit_bytes(artifacts, data, key) == (len(data), digest)
    assert artifacts.size(key) == len(data)
    assert artifacts.download(key, tmp_path / "out" / "big") == (len(data), digest)
    assert (tmp_path / "out" / "big").read_bytes() == data
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["big"]  # no partial left
    assert artifacts.read_range(key, PART_BYTES - 2, 4) == data[PART_BYTES - 2 : PART_BYTES + 2]
    with artifacts.local_copy(key, tmp_path) as path:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    if isinstance(artifacts, S3Store):  # it really went as a multipart upload
        head = artifacts.client.head_object(Bucket=artifacts.bucket, Key=artifacts._name(key))
        assert head["ETag"].strip('"').endswith("-2")
        assert head["Metadata"]["sha256"] == digest
    else:  # read in place, not copied
        assert not list(tmp_path.glob("copy-*"))


@pytest.mark.parametrize("key", ["", ".", "/etc/passwd", "../up", "a/../../b", "a\\b", "a/.."])
def test_invalid_keys_are_refused(artifacts: ArtifactStore, key: str):
    calls = (
        lambda: artifacts.staging_path(key),
        lambda: artifacts.put_bytes(b"x", key),
        lambda: artifacts.open(key),
        lambda: artifacts.read_range(key, 0, 1),
        lambda: artifacts.size(key),
        lambda: artifacts.exists(key),
        lambda: artifacts.delete(key),
    )
    for call in calls:
        with pytest.raises(ValueError, match="invalid artifact key"):
            call()
    staged = artifacts.staging_path("fine")
    staged.write_bytes(b"x")
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.commit(staged, key)


def test_a_staged_file_is_consumed_by_commit_and_invisible_before(artifacts: ArtifactStore):
    key = "jobs/4/checkpoints/step-2.safetensors"
    staging = artifacts.staging_path(key)
    assert not staging.exists()
    staging.write_bytes(b"half written")
    assert not artifacts.exists(key) and artifacts.list("") == []
    artifacts.commit(staging, key)
    assert not staging.exists()
    assert artifacts.get_bytes(key) == b"half written"
    assert [i.key for i in artifacts.list("")] == [key]


def test_stale_staging_files_are_swept(artifacts: ArtifactStore):
    stale, fresh = artifacts.staging_path("jobs/5/a"), artifacts.staging_path("jobs/5/b")
    stale.write_bytes(b"a killed writer's")
    fresh.write_bytes(b"a writer still at it")
    old = time.time() - 7 * HOUR
    os.utime(stale, (old, old))
    artifacts.put_bytes(b"kept", "jobs/5/c")
    if (stored := artifacts.local_path("jobs/5/c")) is not None:
        os.utime(stored, (old, old))  # an old object is no orphan
    assert artifacts.sweep_orphans() == 1
    assert not stale.exists() and fresh.exists()
    assert artifacts.sweep_orphans(older_than=0) == 1 and not fresh.exists()
    assert artifacts.get_bytes("jobs/5/c") == b"kept"
    assert artifacts.sweep_orphans(older_than=0) == 0


def test_an_incomplete_upload_is_invisible_and_swept(remote: S3Store):
    key = "jobs/6/checkpoints/step-3.safetensors"
    name = remote._name(key)
    client, bucket = remote.client, remote.bucket
    upload = client.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
    client.upload_part(
        Bucket=bucket, Key=name, UploadId=upload, PartNumber=1, Body=b"x" * (5 << 20)
    )

    def pending() -> list[str]:
        found = client.list_multipart_uploads(Bucket=bucket, Prefix=f"{remote.prefix}/")
        return [u["UploadId"] for u in found.get("Uploads", [])]

    assert pending() == [upload]
    assert not remote.exists(key) and remote.list("") == []
    with pytest.raises(ArtifactMissing):
        remote.get_bytes(key)
    assert remote.sweep_orphans() == 0 and pending() == [upload]  # it may still be running
    time.sleep(1.1)  # the server records when it began to the second
    assert remote.sweep_orphans(older_than=0) == 1
    assert pending() == [] and not remote.exists(key)


# --------------------------------------------------------------- choice and URLs


def test_open_store_picks_the_kind_from_the_artifact_root(s3_server: S3Server, tmp_path: Path):
    local = open_store(replace(Settings(), artifact_root=str(tmp_path / "a")))
    assert isinstance(local, LocalStore) and local.is_local
    assert local.url == str((tmp_path / "a").resolve()) and local.local_path("k") is not None
    remote = open_store(
        replace(
            Settings(),
            artifact_root="s3://seqtrain/some/prefix",
            s3_endpoint_url=s3_server.endpoint_url,
            cache_dir=tmp_path / "cache",
        )
    )
    assert isinstance(remote, S3Store) and not remote.is_local
    assert (remote.bucket, remote.prefix, remote.url) == (
        "seqtrain",
        "some/prefix",
        "s3://seqtrain/some/prefix",
    )
    assert remote.local_path("k") is None and remote.presigned_url("k", "k.bin") is None
    assert remote.staging_path("jobs/1/x").parent == tmp_path / "cache" / "staging"
    for bad in ("s3://", "s3:///prefix", "s3://bucket/../x"):
        with pytest.raises(ValueError):
            S3Store(bad, tmp_path)


def test_each_database_session_has_its_kind_of_store(database_url, settings, store):
    """SQLite sessions use a directory, PostgreSQL sessions a bucket prefix of their own
    (tests/conftest.py); the workers' environment names the same store."""
    backend = make_url(database_url).get_backend_name()
    env = worker_env(settings)
    assert env["ARTIFACT_ROOT"] == store.url == settings.artifact_root
    if store_kind(backend) == "local":
        assert isinstance(store, LocalStore) and Path(settings.artifact_root).is_dir()
        return
    assert isinstance(store, S3Store) and store.url.startswith(f"s3://seqtrain/{backend}-")
    assert env["SEQTRAIN_S3_ENDPOINT_URL"] == settings.s3_endpoint_url != ""
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    key = f"probe/{uuid.uuid4().hex}"
    store.put_bytes(b"reachable with the session's credentials", key)
    assert store.get_bytes(key) == b"reachable with the session's credentials"
    store.delete(key)


def test_a_presigned_url_serves_the_object(s3_server, tmp_path, monkeypatch):
    store = s3_store(s3_server, tmp_path, monkeypatch, presign_seconds=60)
    store.put_bytes(b"weights", "jobs/7/checkpoints/w.safetensors")
    url = store.presigned_url("jobs/7/checkpoints/w.safetensors", "w.safetensors")
    assert url is not None and url.startswith(s3_server.endpoint_url)
    with urllib.request.urlopen(url, timeout=10) as answer:  # no credentials needed
        assert answer.read() == b"weights"
        assert 'filename="w.safetensors"' in answer.headers["Content-Disposition"]
    assert LocalStore(tmp_path / "a").presigned_url("k", "k") is None


# ---------------------------------------------------------------------- outages


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A SeaweedFS server of this module's own, which a test stops and starts again (the
    session's server is never stopped)."""
    folder = tmp_path_factory.mktemp("seaweedfs-restartable")
    proc, server = start_seaweedfs(folder)
    state = {"proc": proc, "server": server, "folder": folder}
    yield state
    stop(state["proc"], timeout=1)  # throwaway data


def test_the_store_rides_out_its_server_stopped_and_restarted(restartable, tmp_path, monkeypatch):
    server: S3Server = restartable["server"]
    store = s3_store(server, tmp_path / "scratch", monkeypatch, retry_seconds=60)
    before = os.urandom(PART_BYTES + 1000)
    store.put_bytes(before, "jobs/8/checkpoints/before")
    stop(restartable["proc"], timeout=2)
    failure: list[BaseException] = []

    def restart() -> None:
        time.sleep(5)
        try:
            restartable["proc"], _ = start_seaweedfs(restartable["folder"], ports=server.ports)
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    thread = threading.Thread(target=restart)
    started = time.monotonic()
    thread.start()
    try:
        data = os.urandom(1 << 20)
        assert store.put_bytes(data, "jobs/8/checkpoints/during") == (
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
        waited = time.monotonic() - started
    finally:
        thread.join()
    assert not failure, failure
    assert waited >= 4.5, f"the commit went through in {waited:.1f} s: the store was not down"
    assert store.get_bytes("jobs/8/checkpoints/during") == data
    assert store.get_bytes("jobs/8/checkpoints/before") == before  # nothing lost
    assert [i.key for i in store.list("jobs/8/")] == [
        "jobs/8/checkpoints/before",
        "jobs/8/checkpoints/during",
    ]


def test_an_unreachable_store_raises_a_clear_store_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nothing")
    port = free_port()  # nothing listens there
    store = S3Store(
        "s3://seqtrain/down", tmp_path, endpoint_url=f"http://127.0.0.1:{port}", retry_seconds=1
    )
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.put_bytes(b"x", "jobs/9/checkpoints/c")
    assert time.monotonic() - started < 20
    message = str(caught.value)
    assert message.startswith("artifact store: upload of down/jobs/9/checkpoints/c failed")
    assert f"127.0.0.1:{port}" in message
    assert not isinstance(caught.value, ArtifactMissing)
    assert list(tmp_path.iterdir()) == []  # the staged file went too
    with pytest.raises(StoreError, match="artifact store: check of down/jobs/9"):
        store.size("jobs/9/checkpoints/c")  # down is not "missing"
