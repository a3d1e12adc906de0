"""The local cache of artifacts by content hash (shared.infra.cache), against a directory
store and a real S3 server (SeaweedFS on the loopback): a miss then hits, the counters, a
corrupted object refused, least-recently-used eviction, racing callers downloading once;
and what reads through it: datasets, base models, checkpoint downloads from the API."""

from __future__ import annotations

import fcntl
import hashlib
import threading
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from cli.services import S3Server, start_seaweedfs, stop
from shared import jobs
from shared.data import datasets
from shared.hub.cache import checkout
from shared.hub.registry import ModelError
from shared.infra.cache import ChecksumMismatch, LocalCache, cache_for, readable_file
from shared.infra.models import Dataset
from shared.infra.s3 import S3Store
from shared.infra.storage import ArtifactMissing, ArtifactStore, LocalStore, file_digest
from shared.spec import parse_spec
from tests.helpers import tiny_spec
from tests.hubfiles import bert_dir, zip_dir

BIG = 1 << 30


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    proc, server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop(proc)


def s3_store(server: S3Server, scratch: Path, monkeypatch, presign_seconds: int = 0) -> S3Store:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    url = f"s3://seqtrain/cache-{uuid.uuid4().hex[:12]}"
    return S3Store(url, scratch, endpoint_url=server.endpoint_url, presign_seconds=presign_seconds)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    return s3_store(request.getfixturevalue("s3_server"), tmp_path / "scratch", monkeypatch)


@pytest.fixture
def remote(s3_server, tmp_path, monkeypatch) -> S3Store:
    return s3_store(s3_server, tmp_path / "scratch", monkeypatch)


def put(store: ArtifactStore, key: str, data: bytes) -> str:
    store.put_bytes(data, key)
    return hashlib.sha256(data).hexdigest()


def cache_files(cache: LocalCache) -> list[str]:
    return sorted(p.name for p in (cache.root / "files").iterdir())


def test_a_miss_then_hits_with_counters(store, tmp_path):
    cache = LocalCache(tmp_path / "cache", BIG)
    data = b"text\tlabel\n" + b"good\tpos\n" * 1000
    sha = put(store, "datasets/a", data)
    first = cache.fetch(store, "datasets/a", sha)
    assert not first.hit and first.path == cache.root / "files" / sha
    assert first.path.read_bytes() == data
    again = LocalCache(tmp_path / "cache", BIG)  # another process: the same folder
    assert again.fetch(store, "datasets/a", sha) == type(first)(first.path, True)
    assert again.file(store, "datasets/a", sha) == first.path
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"]) == (2, 1, 0)
    assert stats["hit_rate"] == pytest.approx(2 / 3)
    assert (stats["entries"], stats["bytes"]) == (1, len(data))
    assert cache_files(cache) == [sha, f"{sha}.lock"]


def test_a_corrupted_object_is_refused_and_nothing_is_kept(store, tmp_path):
    cache = LocalCache(tmp_path / "cache", BIG)
    sha = put(store, "jobs/1/checkpoints/step-1.safetensors", b"the real bytes")
    store.put_bytes(b"other bytes", "jobs/1/checkpoints/step-1.safetensors")
    with pytest.raises(ChecksumMismatch, match=f"not the recorded {sha}"):
        cache.file(store, "jobs/1/checkpoints/step-1.safetensors", sha)
    assert cache_files(cache) == [f"{sha}.lock"]
    assert cache.stats()["misses"] == 0
    with pytest.raises(ArtifactMissing):
        cache.file(store, "jobs/1/checkpoints/none.safetensors", "0" * 64)
    with pytest.raises(ValueError, match="invalid content hash"):
        cache.file(store, "jobs/1/checkpoints/step-1.safetensors", "../../etc/passwd")


def test_least_recently_used_entries_go_first(remote, tmp_path):
    cache = LocalCache(tmp_path / "cache", 250)
    sha = {name: put(remote, f"datasets/{name}", name.encode() * 100) for name in "abc"}
    cache.file(remote, "datasets/a", sha["a"])
    cache.file(remote, "datasets/b", sha["b"])
    cache.file(remote, "datasets/a", sha["a"])  # a hit: b is now the least recently used
    cache.file(remote, "datasets/c", sha["c"])
    assert {sha["a"], sha["c"]} <= set(cache_files(cache)) and sha["b"] not in cache_files(cache)
    assert cache.stats()["evictions"] == 1
    # Folders count too, and the entry just added stays even when it alone is too large.
    cache.folder("f" * 64, lambda staging: _fill(staging, 400))
    assert [path.name for _, _, path in cache.entries()] == ["f" * 64]
    assert cache.stats()["evictions"] == 3
    assert not cache.fetch(remote, "datasets/b", sha["b"]).hit  # downloaded again


def test_an_entry_whose_lock_is_held_is_not_evicted(remote, tmp_path):
    cache = LocalCache(tmp_path / "cache", 150)
    sha_a = put(remote, "datasets/a", b"a" * 100)
    sha_b = put(remote, "datasets/b", b"b" * 100)
    cache.file(remote, "datasets/a", sha_a)
    with (cache.root / "files" / f"{sha_a}.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as while another caller checks it
        cache.file(remote, "datasets/b", sha_b)
    assert {sha_a, sha_b} <= set(cache_files(cache)) and cache.stats()["evictions"] == 0
    cache.folder("e" * 64, lambda staging: _fill(staging, 10))  # the next addition: a goes
    assert sha_a not in cache_files(cache) and sha_b in cache_files(cache)
    assert cache.stats()["evictions"] == 1


def _fill(staging: Path, size: int) -> None:
    staging.mkdir()
    (staging / "weights.bin").write_bytes(b"w" * size)


def test_racing_callers_download_once(remote, tmp_path):
    data = b"x" * (3 << 20)
    sha = put(remote, "datasets/big", data)
    downloads: list[str] = []
    real = remote.download

    def counted(key, dest):
        downloads.append(key)
        return real(key, dest)

    remote.download = counted  # type: ignore[method-assign]
    cache = LocalCache(tmp_path / "cache", BIG)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.file(remote, "datasets/big", sha)))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cache.root / "files" / sha] * 6 and downloads == ["datasets/big"]
    stats = cache.stats()
    assert (stats["misses"], stats["hits"]) == (1, 5)
    assert file_digest(results[0]) == (len(data), sha)


def test_a_directory_store_is_read_in_place(tmp_path):
    store = LocalStore(tmp_path / "artifacts")
    sha = put(store, "jobs/3/checkpoints/step-9.safetensors", b"weights")
    cache = LocalCache(tmp_path / "cache", BIG)
    path = readable_file(store, cache, "jobs/3/checkpoints/step-9.safetensors", sha)
    assert path == store.path("jobs/3/checkpoints/step-9.safetensors")
    assert not (cache.root / "files").exists()
    with pytest.raises(ArtifactMissing):
        readable_file(store, cache, "jobs/3/checkpoints/gone.safetensors", sha)


def test_cache_for_reads_the_settings(settings, tmp_path):
    cache = cache_for(replace(settings, cache_dir=tmp_path / "c", cache_bytes=1234))
    assert (cache.root, cache.max_bytes) == (tmp_path / "c", 1234)


# ---------------------------------------------------------------- what reads through it


def test_a_dataset_loads_through_the_cache_and_says_where_from(store, tmp_path):
    data = b"text\tlabel\ngood one\tpos\nbad one\tneg\n"
    sha = put(store, "datasets/" + hashlib.sha256(data).hexdigest(), data)
    row = Dataset(
        id=7,
        uri=f"datasets/{sha}",
        sha256=sha,
        format="tsv",
        options={"text_column": "text", "label_column": "label"},
    )
    cache = LocalCache(tmp_path / "cache", BIG)
    notes: list[str] = []
    for _ in range(2):
        parsed = datasets.load(row, store, cache, notes.append)
        assert [r["text"] for r in parsed.rows] == ["good one", "bad one"]
    if isinstance(store, LocalStore):
        assert all("read from the artifact directory" in n for n in notes)
        assert not (cache.root / "files").exists()
    else:
        assert "downloaded into the cache" in notes[0] and "from this machine's cache" in notes[1]
        assert datasets.load(row, store, None).rows == parsed.rows  # no cache: straight reads
    store.put_bytes(b"text\tlabel\nchanged\tpos\n", row.uri)
    if not isinstance(store, LocalStore):
        with pytest.raises(datasets.DatasetError, match="changed or corrupted"):
            datasets.load(row, store, None)
    store.delete(row.uri)
    with pytest.raises(datasets.DatasetError, match="missing from the artifact store"):
        datasets.load(row, store, LocalCache(tmp_path / "other", BIG))


def test_a_base_model_checks_out_from_a_bucket(remote, tmp_path):
    archive = zip_dir(bert_dir(tmp_path / "bert"), tmp_path / "bert.zip")
    _, sha = file_digest(archive)
    remote.put_bytes(archive.read_bytes(), f"models/{sha}")
    cache = LocalCache(tmp_path / "cache", BIG)
    folder = checkout(remote, f"models/{sha}", sha, cache, BIG)
    assert folder == cache.root / "models" / sha
    assert (folder / "model.safetensors").read_bytes() == (
        tmp_path / "bert" / "model.safetensors"
    ).read_bytes()
    assert list(cache.scratch.iterdir()) == []  # the downloaded archive is gone
    assert checkout(remote, f"models/{sha}", sha, cache, BIG) == folder
    assert (cache.stats()["misses"], cache.stats()["hits"]) == (1, 1)
    remote.put_bytes(b"not the archive", f"models/{sha}")
    with pytest.raises(ModelError, match="has changed since its upload"):
        checkout(remote, f"models/{sha}", sha, LocalCache(tmp_path / "c2", BIG), BIG)
    remote.delete(f"models/{sha}")
    with pytest.raises(ModelError, match="missing from the artifact store"):
        checkout(remote, f"models/{sha}", sha, LocalCache(tmp_path / "c3", BIG), BIG)


@pytest.mark.parametrize("presign", [0, 300])
def test_a_checkpoint_downloads_from_a_bucket(
    settings, db, accounts, s3_server, tmp_path, monkeypatch, presign
):
    from api import create_app
    from tests.conftest import authed_client

    remote = s3_store(s3_server, tmp_path / "scratch", monkeypatch)
    s3 = replace(
        settings,
        artifact_root=remote.url,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_presign_seconds=presign,
        cache_dir=tmp_path / "cache",
    )
    job = jobs.create_job(db, parse_spec(tiny_spec()), accounts["alice"].user_id)
    jobs.claim(db, job.id, "w", 60)
    key = f"jobs/{job.id}/checkpoints/step-1.safetensors"
    data = bytes(range(256)) * 9000  # over 2 MiB: several chunks
    size, sha = remote.put_bytes(data, key)
    jobs.add_checkpoint(
        db, job.id, 1, step=1, epoch=1, uri=key, sha256=sha, size=size, metrics={}, keep_last=5
    )
    ckpt = jobs.list_checkpoints(db, job.id)[0]
    app = create_app(s3, {"TESTING": True})
    client = authed_client(app, accounts["alice"])
    url = f"/api/v1/jobs/{job.id}/checkpoints/{ckpt.id}/download"
    answer = client.get(url)
    assert answer.headers["X-Checksum-SHA256"] == sha
    if presign:
        assert answer.status_code == 302
        with urllib.request.urlopen(answer.headers["Location"], timeout=30) as direct:
            assert direct.read() == data
            assert "step-1.safetensors" in direct.headers["Content-Disposition"]
    else:
        assert answer.status_code == 200 and answer.data == data
        assert answer.headers["Content-Length"] == str(len(data))
        assert answer.headers["Content-Disposition"] == (
            f'attachment; filename="job-{job.id}-step-1.safetensors"'
        )
    remote.delete(key)
    gone = client.get(url)
    assert gone.status_code == 404 and gone.json["error"]["code"] == "not_found"
    app.extensions["seqtrain"].db.dispose()
