"""Job outputs through the queue: batch prediction on the real worker (equal to /predict),
its file formats, cancel, errors, ownership, and the reconciler's recovery of lost ones."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
from werkzeug.serving import make_server

from shared import jobs
from shared.infra.models import JobOutput, utcnow
from shared.jobs import outputs
from shared.spec import parse_spec
from tests.conftest import DATASETS, ROOT, wait_until
from tests.helpers import SMALL_TSV, tiny_spec, upload
from worker.outputs import RUNNER_MODULES, RUNNERS
from worker.outputs.predictions import flatten
from worker.reconciler import Reconciler

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled", "pruned"}
# A queue nobody consumes, one per test: SQLite and PostgreSQL sessions share a Redis.
NOBODY = f"outputs-nobody-{uuid.uuid4().hex[:8]}"
CONLL = b"".join(
    f"{name} B-PER\nmoved O\nto O\n{city} B-LOC\n. O\n\n".encode()
    for name, city in (("Ada", "Oslo"), ("Bob", "Rome"), ("Cy", "Lima"))
)


def train(client, settings, **sections) -> dict:
    """A tiny job trained to success by the session's worker; its JSON."""
    spec = tiny_spec(resources={"queue": settings.default_queue}, **sections)
    job_id = client.post("/api/v1/jobs", json=spec).json["id"]
    job = wait_until(
        lambda: (j := client.get(f"/api/v1/jobs/{job_id}").json)["status"] in TERMINAL and j,
        180,
        message=f"job {job_id} to end",
    )
    assert job["status"] == "succeeded", job["error"]
    return job


def dataset(client, content, filename="rows.tsv", **options):
    options.setdefault("format", "tsv")
    response = upload(client, content, filename, **options)
    assert response.status_code in (200, 201), response.json
    return response.json["reference"]


def finished(client, output, timeout=180.0):
    return wait_until(
        lambda: (o := client.get(output["links"]["self"]).json)["status"] in TERMINAL and o,
        timeout,
        message=f"output {output['id']} to end",
    )


def predictions(client, job_id, reference, timeout=180.0, **params):
    response = client.post(
        f"/api/v1/jobs/{job_id}/predictions", json={"dataset": reference, **params}
    )
    assert response.status_code == 202, response.json
    done = finished(client, response.json, timeout)
    assert done["status"] == "succeeded", done["error"]
    file = client.get(done["links"]["download"])
    assert file.status_code == 200
    assert (
        hashlib.sha256(file.data).hexdigest() == done["sha256"] == file.headers["X-Checksum-SHA256"]
    )
    return done, file.data.decode()


def same_as_predict(client, job_id, texts, records):
    """Labels equal /predict's on the same texts (in its batches of 256), probabilities
    within 1e-5."""
    assert [r["text"].strip() for r in records] == [t.strip() for t in texts]
    texts = [r["text"] for r in records]
    assert [r["row"] for r in records] == list(range(len(texts)))
    for start in range(0, len(texts), 256):
        answer = client.post(
            f"/api/v1/jobs/{job_id}/predict", json={"texts": texts[start : start + 256]}
        )
        assert answer.status_code == 200, answer.json
        for record, expected in zip(records[start:], answer.json["predictions"], strict=False):
            assert record["label"] == expected["label"]
            for label, p in expected["probabilities"].items():
                assert abs(record["probabilities"][label] - p) <= 1e-5


def test_batch_prediction_equals_predict_in_jsonl_and_csv(client, settings, store, worker):
    job_id = train(client, settings, training={"epochs": 2})["id"]
    reference = dataset(client, SMALL_TSV, text_column="sentence", label_column="label")
    texts = [line.split("\t")[0] for line in SMALL_TSV.decode().splitlines()[1:]]

    done, body = predictions(client, job_id, reference)
    records = [json.loads(line) for line in body.splitlines()]
    same_as_predict(client, job_id, texts, records)
    assert done["rows_done"] == done["rows_total"] == len(texts) and done["progress"] == 1.0
    assert done["summary"]["rows"] == len(texts) and done["summary"]["rows_per_second"] > 0
    assert done["filename"].endswith(".jsonl") and done["attempt"] == 1

    done_csv, body_csv = predictions(client, job_id, reference, format="csv")
    rows = list(csv.DictReader(io.StringIO(body_csv)))
    assert [row["text"] for row in rows] == texts
    assert [row["label"] for row in rows] == [r["label"] for r in records]
    labels = sorted(records[0]["probabilities"])
    assert set(rows[0]) == {"row", "text", "label", *(f"p_{label}" for label in labels)}
    first = f"p_{labels[0]}"
    assert abs(float(rows[3][first]) - records[3]["probabilities"][labels[0]]) <= 1e-6
    listed = client.get(f"/api/v1/jobs/{job_id}/outputs").json["outputs"]
    assert [o["id"] for o in listed] == [done_csv["id"], done["id"]]
    # Each file lives under its output's own prefix in the store.
    assert store.exists(f"jobs/{job_id}/outputs/{done['id']}/a1/{done['filename']}")


def test_tagging_and_language_model_outputs_have_their_fields(client, settings, worker):
    tagger = train(
        client,
        settings,
        task="tagging",
        data={"dataset": "builtin:entities"},
        training={"epochs": 1},
    )["id"]
    sentences = dataset(client, CONLL, "s.conll", format="conll", scheme="IOB2")
    _, body = predictions(client, tagger, sentences, format="csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["tokens"] for row in rows] == [
        "Ada moved to Oslo .",
        "Bob moved to Rome .",
        "Cy moved to Lima .",
    ]
    assert all(len(row["tags"].split()) == 5 for row in rows)
    answer = client.post(
        f"/api/v1/jobs/{tagger}/predict", json={"tokens": [r["tokens"].split() for r in rows]}
    )
    assert [" ".join(p["tags"]) for p in answer.json["predictions"]] == [r["tags"] for r in rows]

    lm = train(
        client,
        settings,
        task="language_modeling",
        data={"dataset": "builtin:stories", "tokenizer": {"kind": "char"}},
        model={"type": "gru"},
        training={"max_steps": 20, "epochs": 1},
    )["id"]
    prompts = dataset(client, b"the cat\nonce upon a time\n", "p.txt", format="text")
    done, body = predictions(client, lm, prompts, length=12, seed=3, temperature=0.5)
    records = [json.loads(line) for line in body.splitlines()]
    assert [(r["row"], r["prompt"]) for r in records] == [(0, "the cat"), (1, "once upon a time")]
    assert all(isinstance(r["text"], str) and r["text"] for r in records)
    again = client.post(
        f"/api/v1/jobs/{lm}/generate",
        json={"prompt": "once upon a time", "length": 12, "seed": 4, "temperature": 0.5},
    )
    assert again.json["text"] == records[1]["text"]  # row i samples with seed + i


def test_cancel_a_running_output_leaves_no_file(client, settings, store, worker):
    job_id = train(client, settings, training={"epochs": 1})["id"]
    many = b"text\tlabel\n" + b"".join(
        f"row {i} was great fun\tpos\n".encode() for i in range(60_000)
    )
    reference = dataset(client, many, text_column="text", label_column="label")
    made = client.post(f"/api/v1/jobs/{job_id}/predictions", json={"dataset": reference}).json
    wait_until(
        lambda: client.get(made["links"]["self"]).json["rows_done"] > 0, 120, 0.02, "rows predicted"
    )
    cancel = client.post(made["links"]["cancel"])
    assert cancel.status_code == 202
    done = finished(client, made, 30)
    assert done["status"] == "cancelled" and done["error"] == "cancelled by user"
    assert 0 < done["rows_done"] < 60_000 and done["filename"] is None
    assert client.get(made["links"]["download"]).status_code == 409
    assert store.list(f"jobs/{job_id}/outputs/") == []
    assert client.post(made["links"]["cancel"]).status_code == 409  # already over


@pytest.fixture(autouse=True)
def nobody(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "NOBODY", f"outputs-nobody-{uuid.uuid4().hex[:8]}")


def queued_job(db, owner_id):
    spec = parse_spec(tiny_spec(resources={"queue": NOBODY}))
    return jobs.create_job(db, spec, owner_id=owner_id)


def test_refusals_and_ownership(app, client, db, accounts):
    job = queued_job(db, accounts["alice"].user_id)
    post = lambda body, who=client: who.post(f"/api/v1/jobs/{job.id}/predictions", json=body)  # noqa: E731
    reference = dataset(client, SMALL_TSV, text_column="sentence", label_column="label")
    assert post({"dataset": reference}).status_code == 409  # no checkpoint yet
    for bad in ("dataset:987654", "nonesuch", "dataset:nonesuch", "builtin:entities", "dataset:0"):
        refused = post({"dataset": bad})
        assert refused.status_code == 422, (bad, refused.json)
        assert refused.json["error"]["fields"][0]["path"] == "dataset"
    conll = dataset(client, CONLL, "s.conll", format="conll", scheme="IOB2")
    assert "predicts over" in post({"dataset": conll}).json["error"]["message"]
    assert post({"dataset": reference, "format": "xml"}).status_code == 422
    assert post({"dataset": reference, "rows": 3}).status_code == 422

    # Another user sees neither the job's outputs nor an output by id; an admin sees both.
    output = jobs.create_output(
        db,
        job_id=job.id,
        owner_id=accounts["alice"].user_id,
        kind="predictions",
        params={"dataset": reference},
        queue=NOBODY,
        checkpoint_id=None,
    )
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {accounts['bob'].token}"
    for path in (f"/api/v1/outputs/{output.id}", f"/api/v1/jobs/{job.id}/outputs"):
        assert bob.get(path).status_code == 403
    assert bob.post(f"/api/v1/outputs/{output.id}/cancel").status_code == 403
    assert post({"dataset": reference}, bob).status_code == 403
    root = app.test_client()
    root.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {accounts['root'].token}"
    assert root.get(f"/api/v1/outputs/{output.id}").status_code == 200
    assert client.get("/api/v1/outputs/424242").status_code == 404

    # A queued output is cancelled at once; its download is a 409.
    assert client.get(f"/api/v1/outputs/{output.id}/download").status_code == 409
    cancelled = client.post(f"/api/v1/outputs/{output.id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json["status"] == "cancelled"
    assert cancelled.json["finished_at"] and jobs.claim_output(db, output.id, "w", 60) is None


def lost_output(db, job_id, max_attempts=3):
    output = jobs.create_output(
        db,
        job_id=job_id,
        owner_id=None,
        kind="predictions",
        params={},
        queue=NOBODY,
        checkpoint_id=None,
        max_attempts=max_attempts,
    )
    attempt = jobs.claim_output(db, output.id, "lost-worker", 60)
    assert attempt == 1
    assert jobs.output_progress(db, output.id, attempt, 10, 100) is False
    return output.id


def expire(db, output_id):
    with db.session() as session:
        row = session.get(JobOutput, output_id)
        row.lease_expires_at = utcnow() - timedelta(seconds=1)


def test_the_reconciler_recovers_a_lost_workers_output(db, settings, accounts, reconciler_alone):
    job = queued_job(db, accounts["alice"].user_id)
    retried, last = lost_output(db, job.id), lost_output(db, job.id, max_attempts=1)
    reconciler = Reconciler(db, settings)
    expire(db, retried)
    expire(db, last)
    done = reconciler.run_once(force=True)
    assert retried in done.outputs_requeued and last in done.outputs_failed
    again = jobs.get_output(db, retried)
    assert again.status == "queued" and again.attempt == 1 and again.rows_done == 0
    assert "lost" in jobs.get_output(db, last).error
    # The stale attempt is fenced out of every write.
    with pytest.raises(jobs.Fenced):
        jobs.output_progress(db, retried, 1, 20, 100)
    assert not jobs.finish_output(db, retried, 1, "succeeded", uri="x")
    assert jobs.claim_output(db, retried, "w", 60) == 2

    # A queued output whose message was lost is enqueued again.
    waiting = jobs.create_output(
        db,
        job_id=job.id,
        owner_id=None,
        kind="predictions",
        params={},
        queue=NOBODY,
        checkpoint_id=None,
    )
    with db.session() as session:
        session.get(JobOutput, waiting.id).enqueued_at = utcnow() - timedelta(hours=1)
    assert waiting.id in reconciler.run_once(force=True).outputs_enqueued
    assert waiting.id not in reconciler.run_once(force=True).outputs_enqueued  # it has one now


def test_the_runner_registry_and_csv_cells():
    assert set(RUNNERS) == set(RUNNER_MODULES) == {"predictions", "export"}
    assert flatten({"row": 1, "tokens": ["a", "b"], "probabilities": {"x": 0.25}}) == {
        "row": 1,
        "tokens": "a b",
        "p_x": 0.25,
    }
    with pytest.raises(ValueError, match="terminal"):
        outputs.finish_output(None, 1, 1, "running")  # type: ignore[arg-type]


@pytest.fixture
def api_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_the_cli_predicts_a_dataset_to_a_file(
    api_url, client, settings, accounts, worker, tmp_path
):
    job_id = train(client, settings, training={"epochs": 1})["id"]
    reference = dataset(client, SMALL_TSV, text_column="sentence", label_column="label")
    out = tmp_path / "p.csv"
    env = dict(os.environ, SEQTRAIN_TOKEN=accounts["alice"].token, SEQTRAIN_VAR_DIR=str(tmp_path))
    command = [sys.executable, "-m", "cli.main", "predict", str(job_id), "--dataset", reference]
    ran = subprocess.run(
        [*command, "--format", "csv", "--output", str(out), "--url", api_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert len(list(csv.DictReader(out.open()))) == 80 and "80 rows" in ran.stdout
    failed = subprocess.run(
        [*command[:-1], "dataset:999999", "--output", str(out), "--url", api_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env=env,
    )
    assert failed.returncode != 0 and "dataset" in failed.stderr


@pytest.mark.skipif(
    not (DATASETS / "sst2" / "dev.tsv").is_file(), reason="SST-2 not in ../shared/datasets"
)
def test_sst2_dev_batch_prediction_gives_the_labels_of_predict(client, settings, worker):
    train_rows = (DATASETS / "sst2" / "train.tsv").read_bytes().splitlines(keepends=True)[:3001]
    train_ref = dataset(
        client, b"".join(train_rows), "sst2-part.tsv", text_column="sentence", label_column="label"
    )
    dev = (DATASETS / "sst2" / "dev.tsv").read_bytes()
    dev_ref = dataset(client, dev, "sst2-dev.tsv", text_column="sentence", label_column="label")
    job_id = train(
        client, settings, data={"dataset": train_ref, "max_length": 64}, training={"epochs": 1}
    )["id"]
    started = time.perf_counter()
    done, body = predictions(client, job_id, dev_ref)
    records = [json.loads(line) for line in body.splitlines()]
    assert len(records) == 872 and done["rows_total"] == 872, time.perf_counter() - started
    texts = [line.split("\t")[0] for line in dev.decode().splitlines()[1:]]
    same_as_predict(client, job_id, texts, records)
