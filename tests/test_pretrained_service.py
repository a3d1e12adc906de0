"""Pretrained models through the service: a tiny BERT and a tiny GPT-2, built here from
configs, archived and uploaded through the API as a user would, fine-tuned by a real Celery
worker through the real queue, and served by /predict and /generate."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.data.datasets import BUILTIN_DATASETS, load
from tests.conftest import wait_until
from tests.hfmodels import archive, tiny_bert, tiny_gpt2
from tests.test_auth import form_csrf

TERMINAL = {"succeeded", "failed", "cancelled", "pruned"}


def builtin_rows(name: str) -> list[dict[str, Any]]:
    return load(BUILTIN_DATASETS[name], None).rows  # type: ignore[arg-type]


def words_of(name: str) -> list[str]:
    rows = builtin_rows(name)
    if "tokens" in rows[0]:
        return [t for r in rows for t in r["tokens"]]
    return [w for r in rows for w in re.findall(r"\w+|[^\w\s]", r["text"])]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Archives of a tiny BERT (the sentiment and entity words) and a tiny GPT-2 (stories)."""
    root = tmp_path_factory.mktemp("hf")
    bert = tiny_bert(root / "bert", words_of("sentiment") + words_of("entities"))
    stories = load(BUILTIN_DATASETS["stories"], None).text  # type: ignore[arg-type]
    gpt2 = tiny_gpt2(root / "gpt2", (stories or "").splitlines())
    return {
        "bert": archive(bert, root / "bert.zip", "zip"),
        "gpt2": archive(gpt2, root / "gpt2.tar.gz", "tar.gz"),
    }


def upload_model(client, path: Path, name: str) -> dict[str, Any]:
    form = {"file": (io.BytesIO(path.read_bytes()), path.name), "name": name}
    response = client.post("/api/v1/models", data=form, content_type="multipart/form-data")
    assert response.status_code in (200, 201), response.json
    return response.json


def pretrained_spec(settings, task: str, reference: str, **sections: Any) -> dict[str, Any]:
    dataset = {"classification": "sentiment", "tagging": "entities"}.get(task, "stories")
    spec: dict[str, Any] = {
        "name": f"fine-tune {task}",
        "task": task,
        "data": {"dataset": f"builtin:{dataset}", "max_length": 32, "val_fraction": 0.2},
        "model": {"type": "pretrained", "pretrained": reference},
        "training": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "log_every_steps": 5},
        "resources": {"queue": settings.default_queue},
        "checkpoint": {"keep_last": 2},
    }
    for key, value in sections.items():
        spec.setdefault(key, {}).update(value)
    return spec


def run_job(client, spec: dict[str, Any], timeout: float = 240.0) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.json
    job_id = response.json["id"]
    job = wait_until(
        lambda: (j := client.get(f"/api/v1/jobs/{job_id}").json)["status"] in TERMINAL and j,
        timeout,
        interval=0.2,
        message=f"job {job_id} to finish",
    )
    assert job["status"] == "succeeded", job["error"]
    return job


def checkpoint_bytes(client, job_id: int) -> int:
    rows = client.get(f"/api/v1/jobs/{job_id}/checkpoints").json["checkpoints"]
    return max(row["bytes"] for row in rows)


@pytest.mark.e2e
def test_classification_fine_tunes_and_serves(
    client, anon, accounts, settings, worker, model_files
):
    base = upload_model(client, model_files["bert"], "<tiny> bert")
    assert base["model_type"] == "bert" and base["parameters"] > 0
    job = run_job(
        client,
        pretrained_spec(settings, "classification", "<tiny> bert", training={"epochs": 4}),
    )
    # Pinned at submit, with fine-tuning's defaults where the spec said nothing.
    assert job["spec"]["model"]["pretrained"] == f"model:{base['id']}"
    assert job["spec"]["training"]["scheduler"] == "linear"
    assert job["spec"]["model"]["pooling"] == "mean"
    assert job["estimate"]["parameters"] >= base["parameters"]
    assert job["latest_metrics"]["val/accuracy"]["value"] > 0.6
    answer = client.post(
        f"/api/v1/jobs/{job['id']}/predict", json={"texts": ["a wonderful film", "awful"]}
    )
    assert answer.status_code == 200, answer.json
    predictions = answer.json["predictions"]
    assert len(predictions) == 2
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in predictions)

    # LoRA trains adapters only: its checkpoint holds them and the head, not the base.
    lora = run_job(
        client,
        pretrained_spec(
            settings, "classification", "<tiny> bert", model={"lora": {"r": 4}, "pooling": "cls"}
        ),
    )
    assert checkpoint_bytes(client, lora["id"]) * 3 < checkpoint_bytes(client, job["id"])
    assert lora["estimate"]["trainable_parameters"] < lora["estimate"]["parameters"] / 5

    # The job page names the base model (escaped, as everything user-supplied).
    csrf = form_csrf(anon.get("/login").data)
    anon.post("/login", data={"token": accounts["alice"].token, "csrf_token": csrf})
    page = anon.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "&lt;tiny&gt; bert" in page and f"model:{base['id']}" in page

    # Its fine-tuned jobs need the base model to serve: deleting it takes force.
    kept = client.delete(f"/api/v1/models/{base['id']}")
    assert kept.status_code == 409 and "2 jobs" in kept.json["error"]["message"]
    assert client.delete(f"/api/v1/models/{base['id']}?force=true").status_code == 204
    gone = client.post(f"/api/v1/jobs/{job['id']}/predict", json={"texts": ["fine"]})
    assert gone.status_code == 409 and "base model was deleted" in gone.json["error"]["message"]


@pytest.mark.e2e
def test_tagging_and_language_modelling(client, settings, worker, model_files):
    upload_model(client, model_files["bert"], "tiny-bert")
    gpt2 = upload_model(client, model_files["gpt2"], "tiny-gpt2")
    tagged = run_job(client, pretrained_spec(settings, "tagging", "tiny-bert", model={"crf": True}))
    assert "val/f1" in tagged["latest_metrics"]
    answer = client.post(
        f"/api/v1/jobs/{tagged['id']}/predict", json={"tokens": [["Anna", "lives", "in", "Oslo"]]}
    )
    assert answer.status_code == 200, answer.json
    assert len(answer.json["predictions"][0]["tags"]) == 4

    lm = run_job(client, pretrained_spec(settings, "language_modeling", f"model:{gpt2['id']}"))
    assert lm["latest_metrics"]["val/perplexity"]["value"] > 1
    generated = client.post(
        f"/api/v1/jobs/{lm['id']}/generate", json={"prompt": "the", "length": 8, "seed": 1}
    )
    assert generated.status_code == 200, generated.json
    assert generated.json["text"].strip()


def test_submit_refuses_what_the_base_model_cannot_do(client, settings, model_files):
    bert = upload_model(client, model_files["bert"], "tiny-bert")
    gpt2 = upload_model(client, model_files["gpt2"], "tiny-gpt2")
    cases = [
        (
            pretrained_spec(settings, "language_modeling", "tiny-bert"),
            "model.pretrained",
            "encoder-only",
        ),
        (
            pretrained_spec(settings, "classification", "tiny-bert", data={"max_length": 100}),
            "data.max_length",
            "64 positions",
        ),
        (
            pretrained_spec(settings, "classification", "tiny-gpt2", model={"pooling": "cls"}),
            "model.pooling",
            "causal",
        ),
        (
            pretrained_spec(
                settings, "language_modeling", "tiny-gpt2", model={"freeze": "encoder"}
            ),
            "model.freeze",
            "nothing to train",
        ),
        (
            pretrained_spec(settings, "classification", "no-such-model"),
            "model.pretrained",
            "no-such-model",
        ),
        (
            pretrained_spec(
                settings, "classification", "tiny-bert", data={"tokenizer": {"kind": "bpe"}}
            ),
            "model",
            "data.tokenizer",
        ),
    ]
    for spec, path, words in cases:
        response = client.post("/api/v1/jobs", json=spec)
        assert response.status_code == 422, (spec, response.json)
        fields = response.json["error"]["fields"]
        assert any(f["path"] == path and words in f["message"] for f in fields), fields
    # A default max_length above the positions is cut to them, not refused.
    spec = pretrained_spec(settings, "classification", f"model:{bert['id']}")
    del spec["data"]["max_length"]
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.json
    job = client.get(f"/api/v1/jobs/{response.json['id']}").json
    assert job["spec"]["data"]["max_length"] == 64
    # ... and the base model is now in use by a queued job.
    conflict = client.delete(f"/api/v1/models/{bert['id']}")
    assert (
        conflict.status_code == 409
        and str(response.json["id"]) in conflict.json["error"]["message"]
    )
    assert gpt2["model_type"] == "gpt2"


def test_local_training_takes_the_base_model_from_a_file(tmp_path, model_files):
    """`seqtrain train --local --base-model ARCHIVE`: the archive is checked and unpacked as
    an upload would be, and the same trainer fine-tunes it."""
    import json
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT

    spec = pretrained_spec(SimpleNamespace(default_queue="default"), "classification", "tiny")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))

    def seqtrain(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cli.main", "train", str(path), "--local", "--json"]
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False
        )

    done = seqtrain("--base-model", str(model_files["bert"]))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epoch"] == 2 and "pretrained tokenizer" in done.stderr
    missing = seqtrain()
    assert missing.returncode == 1 and "--base-model" in missing.stderr
