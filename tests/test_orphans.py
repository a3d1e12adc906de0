"""Durable checkpoints and their orphans, on a directory and on a real S3 server (SeaweedFS
on the loopback): a checkpoint row exists only for a complete, verified object; a row that
cannot be written takes its object with it; a trainer killed mid-upload leaves no row and
no visible object, and the incomplete upload is swept; the reconciler deletes a dead
attempt's checkpoint objects that no row names, and sweeps at most every 10 minutes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from cli.services import S3Server, free_port
from shared import jobs
from shared.infra.models import Job, utcnow
from shared.infra.queue import redis_client
from shared.infra.storage import ArtifactStore, StoreError, open_store
from shared.spec import JobSpec, parse_spec
from tests.conftest import ROOT, s3_settings, wait_until, worker_env
from tests.helpers import tiny_spec
from worker import reconciler as reconciler_module
from worker.reconciler import SWEEP_KEY, Reconciler, remove_orphan_checkpoints
from worker.reporting import ServiceReporter

NOBODY = {"queue": "orphans-nobody-listens"}
CHECKPOINTS = "jobs/{}/checkpoints/"


@pytest.fixture(params=["local", "s3"])
def conf(request: pytest.FixtureRequest, settings, db, tmp_path, monkeypatch):
    """The test's settings, on a fresh directory or a fresh prefix of the S3 server, whatever
    the session's own store."""
    if request.param == "local":
        return replace(settings, artifact_root=str(tmp_path / "artifacts"), s3_endpoint_url="")
    return s3_settings(settings, request.getfixturevalue("s3_server"), monkeypatch, "orphans")


def running_job(db, lease_seconds: float = 60, **sections) -> tuple[int, int]:
    spec = parse_spec(tiny_spec(resources=NOBODY, **sections))
    job = jobs.create_job(db, spec, owner_id=None)
    attempt = jobs.claim(db, job.id, "orphans-test", lease_seconds)
    assert attempt is not None
    return job.id, attempt


def expire_lease(db, job_id: int) -> None:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = utcnow() - timedelta(seconds=1)


def add_row(db, job_id: int, attempt: int, key: str, step: int, size: int) -> None:
    jobs.add_checkpoint(
        db,
        job_id,
        attempt,
        step=step,
        epoch=0,
        uri=key,
        sha256="0" * 64,
        size=size,
        metrics={},
        keep_last=5,
    )


def reporter(db, store: ArtifactStore, conf, job_id: int, attempt: int) -> ServiceReporter:
    spec = JobSpec.model_validate(jobs.get_job(db, job_id).spec)
    return ServiceReporter(db, store, job_id, attempt, spec, conf.redis_url)


def small_state():
    import torch

    return {"next_batch": 0, "model": {"weight": torch.arange(64, dtype=torch.float32)}}


def keys(store: ArtifactStore, job_id: int) -> list[str]:
    return [info.key for info in store.list(CHECKPOINTS.format(job_id))]


# ---------------------------------------------------------------- the checkpoint write


def test_a_saved_checkpoint_is_complete_before_its_row(conf, db):
    store = open_store(conf)
    job_id, attempt = running_job(db)
    reporter(db, store, conf, job_id, attempt).save(small_state(), 0, 7, {"loss": 1.0}, False)
    (row,) = jobs.list_checkpoints(db, job_id)
    assert row.uri == f"jobs/{job_id}/checkpoints/step-000000007-end-a{attempt}.safetensors"
    assert keys(store, job_id) == [row.uri]
    data = store.get_bytes(row.uri)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (row.bytes, row.sha256)


def test_a_fenced_save_deletes_its_object(conf, db):
    """The row cannot be written (another attempt owns the job): the object goes too."""
    store = open_store(conf)
    job_id, attempt = running_job(db)
    assert jobs.requeue(db, job_id, attempt, "worker lost", "test")
    assert jobs.claim(db, job_id, "another", 60) == attempt + 1
    with pytest.raises(jobs.Fenced):
        reporter(db, store, conf, job_id, attempt).save(small_state(), 0, 7, {}, False)
    assert jobs.list_checkpoints(db, job_id) == []
    assert keys(store, job_id) == []


def test_a_store_that_stays_down_fails_the_save_with_no_row(settings, db, monkeypatch):
    dead = S3Server(f"http://127.0.0.1:{free_port()}", "nobody", "nothing", ())
    conf = replace(s3_settings(settings, dead, monkeypatch, "orphans"), store_retry_seconds=0.5)
    store = open_store(conf)
    job_id, attempt = running_job(db)
    with pytest.raises(StoreError, match="failed"):
        reporter(db, store, conf, job_id, attempt).save(small_state(), 0, 7, {}, False)
    assert jobs.list_checkpoints(db, job_id) == []


def test_the_trainer_exits_to_be_retried_when_the_store_stays_down(settings, db, monkeypatch):
    """ExitCode.RETRY (75) with an `error:` line, not a crash: a new attempt resumes."""
    dead = S3Server(f"http://127.0.0.1:{free_port()}", "nobody", "nothing", ())
    conf = s3_settings(settings, dead, monkeypatch, "orphans")
    job_id, attempt = running_job(db)
    env = worker_env(conf) | dead.env() | {"SEQTRAIN_STORE_RETRY_SECONDS": "0.5"}
    done = subprocess.run(
        [sys.executable, "-m", "worker.trainer", "--job-id", str(job_id), "--attempt", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 75, done.stderr[-3000:]
    assert "error: artifact store unavailable" in done.stderr
    assert "Traceback" not in done.stderr
    assert jobs.list_checkpoints(db, job_id) == [] and attempt == 1


# ---------------------------------------------------------------- a killed upload

UPLOADER = textwrap.dedent(
    """
    import os, torch
    from shared import jobs
    from shared.infra.db import Database
    from shared.infra.storage import open_store
    from shared.settings import Settings
    from shared.spec import JobSpec
    from worker.reporting import ServiceReporter

    settings = Settings.from_env()
    db = Database(settings.database_url)
    job_id = int(os.environ["ORPHANS_JOB_ID"])
    spec = JobSpec.model_validate(jobs.get_job(db, job_id).spec)
    reporter = ServiceReporter(db, open_store(settings), job_id, 1, spec, settings.redis_url)
    state = {"next_batch": 3, "model": {"weight": torch.rand(40 << 20)}}  # 160 MiB
    print("saving", flush=True)
    reporter.save(state, 0, 11, {}, False)
    print("saved", flush=True)
    """
)


def test_a_killed_upload_leaves_no_row_and_no_object(settings, db, s3_server, monkeypatch):
    conf = s3_settings(settings, s3_server, monkeypatch, "orphans")
    store = open_store(conf)
    client, bucket = store.client, store.bucket  # type: ignore[attr-defined]
    job_id, attempt = running_job(db)
    key = f"jobs/{job_id}/checkpoints/step-000000011-b3-a{attempt}.safetensors"
    env = worker_env(conf) | s3_server.env() | {"ORPHANS_JOB_ID": str(job_id)}
    proc = subprocess.Popen(
        [sys.executable, "-c", UPLOADER], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    try:

        def uploads() -> list[dict]:
            prefix = store.prefix  # type: ignore[attr-defined]
            found = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
            return found.get("Uploads", [])

        def first_part_sent() -> bool:
            for upload in uploads():
                parts = client.list_parts(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                if parts.get("Parts"):
                    return True
            assert proc.poll() is None, "the uploader ended before it was killed"
            return False

        wait_until(first_part_sent, 120, interval=0.01, message="the first part of the upload")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert jobs.list_checkpoints(db, job_id) == []
    assert store.size(key) is None and keys(store, job_id) == []
    assert len(uploads()) == 1
    scratch = conf.cache_dir / "staging"
    assert list(scratch.glob(".*.tmp")), "the killed writer's staged file"
    assert store.sweep_orphans(older_than=0) >= 2  # the upload and the staged file
    assert uploads() == [] and not list(scratch.glob(".*.tmp"))


# ---------------------------------------------------------------- the reconciler


def test_orphan_checkpoints_are_those_no_row_names(conf, db):
    store = open_store(conf)
    job_id, attempt = running_job(db)
    other_id, _ = running_job(db)
    prefix = CHECKPOINTS.format(job_id)
    named, orphan = prefix + "step-1.safetensors", prefix + "step-2.safetensors"
    for key in (named, orphan, CHECKPOINTS.format(other_id) + "step-3.safetensors"):
        store.put_bytes(b"weights", key)
    add_row(db, job_id, attempt, named, 1, 7)
    assert remove_orphan_checkpoints(db, store, job_id) == []  # too young: maybe mid-write
    time.sleep(1.1)  # S3's LastModified has whole seconds
    assert remove_orphan_checkpoints(db, store, job_id, older_than=0) == [orphan]
    assert keys(store, job_id) == [named]
    assert len(keys(store, other_id)) == 1


def test_the_reconciler_cleans_up_after_a_dead_attempt(conf, db, monkeypatch, reconciler_alone):
    store = open_store(conf)
    job_id, attempt = running_job(db)
    prefix = CHECKPOINTS.format(job_id)
    named, orphan = prefix + "step-1.safetensors", prefix + "step-2.safetensors"
    store.put_bytes(b"weights", named)
    store.put_bytes(b"weights", orphan)  # a killed trainer's upload that got no row
    add_row(db, job_id, attempt, named, 1, 7)
    time.sleep(1.1)
    monkeypatch.setattr(reconciler_module, "ORPHAN_CHECKPOINT_SECONDS", 0.5)
    redis = redis_client(conf.redis_url)
    first = Reconciler(db, conf)
    expire_lease(db, job_id)
    redis.delete(SWEEP_KEY)
    done = first.run_once(force=True)
    assert done.requeued == [job_id] and done.orphans == [orphan]
    assert keys(store, job_id) == [named]
    assert done.swept is not None  # the first pass sweeps
    assert first.run_once(force=True).swept is None  # then not for 10 minutes
    assert Reconciler(db, conf).run_once(force=True).swept is None  # nor on another worker
