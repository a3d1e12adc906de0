"""End to end: HTTP -> SQL -> Redis -> a real Celery worker process -> trainer child -> SQL + artifacts."""

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load

from tests.conftest import DATASETS, wait_until
from tests.helpers import SMALL_TSV, tiny_spec, upload
from worker.procs import trainer_pids

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled", "pruned"}


def submit(client, settings, **sections):
    spec = tiny_spec(resources={"queue": settings.default_queue}, **sections)
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.json
    return response.json["id"]


def wait_for_status(client, job_id, statuses, timeout=120.0):
    return wait_until(
        lambda: (job := client.get(f"/api/v1/jobs/{job_id}").json)["status"] in statuses and job,
        timeout,
        interval=0.05,
        message=f"job {job_id} to reach {statuses}",
    )


def test_job_runs_from_post_to_checkpoint(client, settings, store, worker):
    job_id = submit(client, settings, training={"epochs": 3, "lr": 0.03})
    job = wait_for_status(client, job_id, TERMINAL)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 1 and job["epoch"] == 3 and job["error"] is None
    assert job["started_at"] and job["finished_at"] >= job["started_at"]
    assert [(e["from_status"], e["to_status"]) for e in job["events"]] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]

    # Metrics: every epoch's train and val loss, step losses; training loss decreased.
    rows = client.get(f"/api/v1/jobs/{job_id}/metrics?split=train&name=loss").json["metrics"]
    assert len(rows) >= 6
    per_epoch = {}
    for row in rows:
        per_epoch.setdefault(row["epoch"], []).append(row["value"])
    epochs = sorted(per_epoch)
    assert per_epoch[epochs[-1]][-1] < per_epoch[epochs[0]][0]
    assert {"train/loss", "val/loss", "val/accuracy", "train/accuracy"} <= set(
        job["latest_metrics"]
    )
    val = client.get(f"/api/v1/jobs/{job_id}/metrics?split=val&name=loss").json["metrics"]
    assert [m["epoch"] for m in val] == [1, 2, 3]

    # Checkpoints: keep_last=2 kept the newest two; files exist and load with safetensors.
    checkpoints = client.get(f"/api/v1/jobs/{job_id}/checkpoints").json["checkpoints"]
    assert [c["epoch"] for c in checkpoints] == [2, 3]
    newest = checkpoints[-1]
    files = [
        info
        for info in store.list(f"jobs/{job_id}/checkpoints/")
        if info.key.endswith(".safetensors")
    ]
    assert len(files) == 2
    tensors = load(store.get_bytes(files[-1].key))
    assert (
        "model.encoder.embedding.weight" in tensors
        and tensors["model.encoder.embedding.weight"].shape[1] == 16
    )
    download = client.get(newest["download_url"])
    assert download.status_code == 200
    assert (
        hashlib.sha256(download.data).hexdigest()
        == newest["sha256"]
        == download.headers["X-Checksum-SHA256"]
    )
    assert len(download.data) == newest["bytes"] == files[-1].size
    log = store.get_bytes(f"jobs/{job_id}/logs/attempt-1.log").decode()
    assert "epoch 3/3" in log


def test_cancel_running_job_within_two_seconds(client, settings, worker):
    job_id = submit(client, settings, training={"epochs": 500}, data={"val_fraction": 0.5})
    wait_for_status(client, job_id, {"running"}, timeout=60)
    wait_until(lambda: trainer_pids(job_id, settings.database_url), 30, message="trainer process")
    wait_until(
        lambda: client.get(f"/api/v1/jobs/{job_id}").json["step"] > 0, 60, message="training"
    )
    pids = trainer_pids(job_id, settings.database_url)
    started = time.monotonic()
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json["cancel_requested"]
    job = wait_for_status(client, job_id, TERMINAL, timeout=10)
    elapsed = time.monotonic() - started
    assert job["status"] == "cancelled" and elapsed <= 2.0, elapsed
    assert job["error"] == "cancelled by user"
    assert trainer_pids(job_id, settings.database_url) == []
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
        )


def test_trainer_failure_is_recorded_with_its_reason(client, settings, store, worker):
    """A dataset whose stored file vanished: the trainer fails at once (no retry) and the
    job's error is the trainer's own account."""
    data = SMALL_TSV + f"great film {uuid.uuid4().hex}\tpos\n".encode()  # in no worker's cache
    created = upload(client, data, format="tsv", text_column="sentence", label_column="label")
    assert created.status_code == 201, created.json
    store.delete(f"datasets/{created.json['sha256']}")
    job_id = submit(client, settings, data={"dataset": created.json["reference"]})
    job = wait_for_status(client, job_id, TERMINAL, timeout=60)
    assert job["status"] == "failed" and job["attempt"] == 1
    assert job["error"].startswith("dataset ") and "missing from the artifact store" in job["error"]


def test_uploaded_dataset_with_explicit_validation_trains(client, settings, worker):
    train = upload(
        client, SMALL_TSV, name="small", format="tsv", text_column="sentence", label_column="label"
    )
    job_id = submit(
        client,
        settings,
        training={"epochs": 8, "lr": 0.02},
        data={
            "dataset": "small",
            "validation_dataset": train.json["reference"],
            "test_dataset": train.json["reference"],
            "tokenizer": {"kind": "bpe", "vocab_size": 120},
        },
    )
    job = wait_for_status(client, job_id, TERMINAL)
    assert job["status"] == "succeeded", job["error"]
    assert job["latest_metrics"]["val/accuracy"]["value"] > 0.9  # the words decide the label
    assert "test/accuracy" in job["latest_metrics"]


def test_duplicate_delivery_runs_nothing_twice(client, app, settings, worker):
    job_id = submit(client, settings, training={"epochs": 1})
    assert wait_for_status(client, job_id, TERMINAL)["status"] == "succeeded"
    # Redis redelivers (visibility timeout) or a client retries: the task must be a no-op.
    app.extensions["seqtrain"].queue.enqueue_job(job_id, settings.default_queue)
    app.extensions["seqtrain"].queue.enqueue_job(job_id, settings.default_queue)
    marker = submit(client, settings, training={"epochs": 1})  # FIFO: done after the duplicates
    assert wait_for_status(client, marker, TERMINAL)["status"] == "succeeded"
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert job["attempt"] == 1 and len(job["events"]) == 3


def test_api_and_celery_processes_never_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; import api.wsgi, worker.celery_app, worker.tasks, worker.supervisor, "
        "worker.agent, worker.reconciler, worker.devices, worker.multinode, shared.jobs.nodes, "
        "cli.main, api.models, api.basemodels, shared.hub.archive, shared.hub.catalog, "
        "shared.hub.registry, shared.hub.cache; "
        "shared.hub.catalog.known_model_types(); "
        "heavy = ('torch', 'transformers', 'peft'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, DATABASE_URL="sqlite:///:memory:")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sst2_uploaded_and_trained_through_the_service(client, settings, worker, database_url):
    """The real SST-2 files, uploaded and trained on (one backend: the data is the point)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("runs once, on SQLite; the PostgreSQL path is covered by the other e2e tests")
    paths = [DATASETS / "sst2/train.tsv", DATASETS / "sst2/dev.tsv"]
    if not all(p.exists() for p in paths):
        pytest.skip(
            f"{paths[0].parent} is not present (the shared data sets sit beside the checkout)"
        )
    options = dict(format="tsv", text_column="sentence", label_column="label")
    train = upload(client, paths[0].read_bytes(), "train.tsv", name="sst2-train", **options).json
    dev = upload(client, paths[1].read_bytes(), "dev.tsv", name="sst2-dev", **options).json
    assert (train["rows"], dev["rows"]) == (67_349, 872)
    job_id = submit(
        client,
        settings,
        data={
            "dataset": "sst2-train",
            "validation_dataset": "sst2-dev",
            "max_length": 48,
            "tokenizer": {"kind": "word", "vocab_size": 16000},
        },
        model={"type": "lstm", "embedding_dim": 32, "hidden_size": 32},
        training={"epochs": 1, "batch_size": 128, "lr": 0.005, "log_every_steps": 50},
    )
    job = wait_for_status(client, job_id, TERMINAL, timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert job["latest_metrics"]["val/accuracy"]["value"] > 0.7
