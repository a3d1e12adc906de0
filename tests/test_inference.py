"""Predictions and generation from trained jobs, through a real worker; and `seqtrain train --local`."""

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.helpers import tiny_spec
from tests.test_e2e import TERMINAL, submit, wait_for_status

pytestmark = pytest.mark.e2e


def trained(client, settings, **sections):
    job_id = submit(client, settings, **sections)
    job = wait_for_status(client, job_id, TERMINAL)
    assert job["status"] == "succeeded", job["error"]
    return job_id


def test_classification_predictions(client, settings, worker):
    job_id = trained(client, settings, training={"epochs": 6, "lr": 0.03})
    response = client.post(
        f"/api/v1/jobs/{job_id}/predict",
        json={"texts": ["the film was wonderful .", "the plot was dull and tedious ."]},
    )
    assert response.status_code == 200, response.json
    first, second = response.json["predictions"]
    assert first["label"] == "positive" and second["label"] == "negative"
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert client.post(f"/api/v1/jobs/{job_id}/generate", json={}).status_code == 409  # not an LM
    assert client.post(f"/api/v1/jobs/{job_id}/predict", json={"texts": []}).status_code == 422


def test_tagging_predictions(client, settings, worker):
    job_id = trained(
        client,
        settings,
        task="tagging",
        data={"dataset": "builtin:entities", "tokenizer": {"lowercase": False}},
        model={"type": "bilstm", "crf": True, "embedding_dim": 32, "hidden_size": 32},
        training={"epochs": 8, "lr": 0.02, "batch_size": 16},
    )
    response = client.post(
        f"/api/v1/jobs/{job_id}/predict",
        json={"tokens": [["Ada", "Lovelace", "moved", "to", "Oslo", "."]]},
    )
    assert response.status_code == 200, response.json
    (prediction,) = response.json["predictions"]
    assert prediction["tags"][:2] == ["B-PER", "I-PER"] and prediction["tags"][4] == "B-LOC"


def test_generation(client, settings, worker):
    job_id = trained(
        client,
        settings,
        task="language_modeling",
        data={
            "dataset": "builtin:stories",
            "max_length": 32,
            "tokenizer": {"kind": "char", "vocab_size": 60},
        },
        model={"type": "gru", "embedding_dim": 32, "hidden_size": 64},
        training={"epochs": 1, "max_steps": 60, "lr": 0.01},
    )
    body = {"prompt": "the baker ", "length": 40, "temperature": 0.5, "top_k": 5, "seed": 1}
    first = client.post(f"/api/v1/jobs/{job_id}/generate", json=body)
    assert first.status_code == 200, first.json
    assert len(first.json["text"]) == 40 and first.json["prompt"] == "the baker "
    assert (
        client.post(f"/api/v1/jobs/{job_id}/generate", json=body).json["text"] == first.json["text"]
    )
    bad = client.post(f"/api/v1/jobs/{job_id}/generate", json={**body, "temperature": 0})
    assert bad.status_code == 422 and bad.json["error"]["fields"][0]["path"] == "temperature"


def test_translation(client, settings, worker):
    """A seq2seq job through the service: BLEU and chrF each epoch, sample translations
    stored with them, and its best checkpoint translating over HTTP, greedy and beam."""
    job_id = trained(
        client,
        settings,
        task="seq2seq",
        data={"dataset": "builtin:dates", "max_length": 24, "tokenizer": {"kind": "char"}},
        model={"type": "gru", "embedding_dim": 32, "hidden_size": 64, "dropout": 0.0},
        training={"epochs": 5, "batch_size": 32, "lr": 0.01},
        decoding={"beam_size": 3, "samples": 2},
    )
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert {"val/bleu", "val/chrf", "val/perplexity"} <= set(job["latest_metrics"])
    bleu = client.get(f"/api/v1/jobs/{job_id}/metrics?split=val&name=bleu").json["metrics"]
    assert [m["epoch"] for m in bleu] == [1, 2, 3, 4, 5] and bleu[-1]["value"] > 50
    samples = client.get(f"/api/v1/jobs/{job_id}/samples").json["samples"]
    assert [s["epoch"] for s in samples] == [5, 4, 3, 2, 1]
    newest = samples[0]["items"]
    assert len(newest) == 2 and newest[0]["signature"].startswith("nrefs:1|case:mixed")
    assert all(item["source"] and item["reference"] for item in newest)

    # The report translates validation again with the best checkpoint: the same BLEU as that
    # epoch's evaluation, and the worst pairs shown.
    report = client.get(f"/api/v1/jobs/{job_id}/report").json["report"]
    section = report["splits"]["validation"]
    assert report["task"] == "seq2seq" and section["beam_size"] == 3
    assert section["bleu"] == pytest.approx(max(m["value"] for m in bleu), abs=1e-9)
    assert report["summary"]["validation/bleu"] == section["bleu"]
    assert section["pairs"] == 400 and len(section["worst"]) == 20

    texts = ["the 3rd of march 2021", "25 December 1999", "july 4th, 2010"]
    beam = client.post(f"/api/v1/jobs/{job_id}/translate", json={"texts": texts})
    assert beam.status_code == 200, beam.json
    assert beam.json["beam_size"] == 3
    got = [t["translation"] for t in beam.json["translations"]]
    wanted = ["2021-03-03", "1999-12-25", "2010-07-04"]
    assert sum(g == w for g, w in zip(got, wanted, strict=True)) >= 2, got
    greedy = client.post(
        f"/api/v1/jobs/{job_id}/translate", json={"texts": texts, "beam_size": 1}
    ).json
    assert greedy["beam_size"] == 1 and len(greedy["translations"]) == 3
    short = client.post(
        f"/api/v1/jobs/{job_id}/translate", json={"texts": texts[:1], "max_length": 4}
    ).json
    assert len(short["translations"][0]["translation"]) <= 4  # char tokens: 4 characters
    assert client.post(f"/api/v1/jobs/{job_id}/predict", json={"texts": ["x"]}).status_code == 409


def test_predict_needs_a_checkpoint_and_ownership(app, client, accounts, db):
    from tests.conftest import authed_client

    job_id = client.post(
        "/api/v1/jobs", json=tiny_spec(resources={"queue": "nobody-listens"})
    ).json["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/predict", json={"texts": ["x"]})
    assert response.status_code == 409 and "no checkpoint" in response.json["error"]["message"]
    other = authed_client(app, accounts["bob"]).post(
        f"/api/v1/jobs/{job_id}/predict", json={"texts": ["x"]}
    )
    assert other.status_code == 403


def test_local_training_prints_json_metrics(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(training={"epochs": 2})))
    data = tmp_path / "train.tsv"
    data.write_text(
        "sentence\tlabel\n" + "".join(f"good {i}\tpos\nbad {i}\tneg\n" for i in range(30))
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "train",
            str(spec),
            "--local",
            "--json",
            "--train-file",
            str(data),
            "--format",
            "tsv",
            "--text-column",
            "sentence",
            "--label-column",
            "label",
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["epoch"] == 2 and 0 <= metrics["val/accuracy"] <= 1
    assert "epoch 2/2" in result.stderr  # progress goes to stderr with --json
    assert list((tmp_path / "out").glob("*.safetensors"))


def test_local_training_reads_pairs(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            tiny_spec(
                task="seq2seq",
                data={"max_length": 16, "tokenizer": {"kind": "char"}},
                model={"type": "gru"},
                training={"epochs": 1},
                decoding={"beam_size": 2},
            )
        )
    )
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"de": f"zahl {i}", "en": f"number {i}"}) + "\n" for i in range(40))
    )
    command = [sys.executable, "-m", "cli.main", "train", str(spec), "--local", "--json"]
    command += ["--train-file", str(data), "--format", "jsonl"]
    result = subprocess.run(
        [*command, "--source-column", "de", "--target-column", "en"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["epoch"] == 1 and 0 <= metrics["val/bleu"] <= 100 and "val/chrf" in metrics
    assert "sacrebleu over 8 pairs (beam 2)" in result.stderr  # 20% of 40 pairs validate
