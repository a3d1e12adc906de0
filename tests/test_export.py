"""Export bundles end to end: a tiny job trained on the real worker, its export requested
through the API (and the CLI), the zip downloaded: its files, weights equal to the
checkpoint's, an ONNX graph that runs under onnxruntime and agrees with /predict, a model
card naming the metrics; validation, conflicts and ownership."""

import io
import json
import os
import subprocess
import sys
import threading
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from werkzeug.serving import make_server

from shared.data.tokenization import tokenizer_from_dict
from shared.zoo.checkpoints import load_checkpoint
from shared.zoo.crf import CRF
from shared.zoo.onnx import onnx_session
from tests.conftest import ROOT, wait_until
from tests.helpers import tiny_spec
from tests.test_outputs import train

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled", "pruned"}
FILES = {"model.safetensors", "tokenizer.json", "labels.json", "spec.json", "README.md"}
TEXTS = ["a gripping , beautiful film", "dull and lifeless", "great", "awful awful plot"]


def export(client, job_id, **body):
    response = client.post(f"/api/v1/jobs/{job_id}/exports", json=body)
    assert response.status_code == 202, response.json
    assert response.json["kind"] == "export" and response.json["params"] == {
        "onnx": body.get("onnx", True)
    }
    done = wait_until(
        lambda: (o := client.get(response.json["links"]["self"]).json)["status"] in TERMINAL and o,
        180,
        message="the export to end",
    )
    assert done["status"] == "succeeded", done["error"]
    file = client.get(done["links"]["download"])
    assert file.status_code == 200 and file.mimetype == "application/zip"
    return done, zipfile.ZipFile(io.BytesIO(file.data))


def unpack(archive, folder: Path) -> Path:
    (top,) = {Path(name).parts[0] for name in archive.namelist()}
    archive.extractall(folder)
    return folder / top


def checkpoint_state(client, output, tmp_path):
    """The checkpoint the export read (the job's best), as the API serves it, loaded."""
    listed = client.get(f"/api/v1/jobs/{output['job_id']}/checkpoints").json["checkpoints"]
    (used,) = [c for c in listed if c["id"] == output["checkpoint_id"]]
    path = tmp_path / "best.safetensors"
    path.write_bytes(client.get(used["download_url"]).data)
    return load_checkpoint(path)


def run_onnx(folder: Path, sequences: list[list[int]]) -> np.ndarray:
    tokens = np.zeros((len(sequences), max(map(len, sequences))), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = seq
    lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
    (scores,) = onnx_session(folder / "model.onnx").run(
        None, {"tokens": tokens, "lengths": lengths}
    )
    return scores


def test_export_bundle_of_a_classifier(client, settings, worker, tmp_path):
    job = train(client, settings, training={"epochs": 2})
    done, archive = export(client, job["id"], onnx=True)
    folder = unpack(archive, tmp_path / "bundle")
    assert {p.name for p in folder.iterdir()} == FILES | {"model.onnx"}
    summary = done["summary"]
    assert set(summary["files"]) == FILES | {"model.onnx"}
    assert summary["bytes"] == done["bytes"] and done["filename"].endswith(".zip")
    assert summary["onnx"]["exported"] and summary["onnx"]["parity"]["max_abs_diff"] <= 1e-4

    # The weights are the best checkpoint's model part, tensor for tensor.
    from safetensors.torch import load_file

    weights = load_file(folder / "model.safetensors")
    state = checkpoint_state(client, done, tmp_path)
    assert set(weights) == set(state["model"])
    assert all(torch.equal(weights[name], state["model"][name]) for name in weights)
    assert json.loads((folder / "labels.json").read_text()) == state["labels"]
    assert json.loads((folder / "spec.json").read_text())["name"] == job["spec"]["name"]

    # The ONNX graph, fed by the bundle's tokenizer, gives /predict's probabilities.
    tokenizer = tokenizer_from_dict(json.loads((folder / "tokenizer.json").read_text()))
    labels = json.loads((folder / "labels.json").read_text())
    logits = run_onnx(folder, [tokenizer.encode(t, 32) for t in TEXTS])
    probabilities = torch.softmax(torch.from_numpy(logits), dim=-1)
    served = client.post(f"/api/v1/jobs/{job['id']}/predict", json={"texts": TEXTS}).json
    for row, answer in zip(probabilities.tolist(), served["predictions"], strict=True):
        assert labels[int(np.argmax(row))] == answer["label"]
        for label, p in zip(labels, row, strict=True):
            assert abs(answer["probabilities"][label] - p) <= 1e-5

    # The card names the final metrics with their values, the ONNX I/O and its parity.
    card = (folder / "README.md").read_text()
    accuracy = job["latest_metrics"]["val/accuracy"]["value"]
    assert f"| val/accuracy | {accuracy:.6g} |" in card and "| val/loss |" in card
    assert "`tokens` | int64 | (batch, length)" in card and "`logits`" in card
    assert f"{summary['onnx']['parity']['max_abs_diff']:.3g}" in card
    assert "```yaml\nname: tiny\n" in card and "builtin:sentiment" in card


def test_export_of_a_bilstm_crf_tagger_decodes_like_predict(client, settings, worker, tmp_path):
    """The graph returns emissions; Viterbi with the bundle's CRF weights gives /predict's tags."""
    job = train(
        client,
        settings,
        task="tagging",
        data={"dataset": "builtin:entities", "tokenizer": {"kind": "word"}},
        model={"type": "bilstm", "crf": True},
        training={"epochs": 1},
    )
    done, archive = export(client, job["id"])
    folder = unpack(archive, tmp_path / "bundle")
    assert done["summary"]["onnx"]["outputs"][0]["name"] == "emissions"
    assert "Viterbi decoding stays outside" in (folder / "README.md").read_text()
    tokenizer = tokenizer_from_dict(json.loads((folder / "tokenizer.json").read_text()))
    tags = json.loads((folder / "labels.json").read_text())
    sentences = [["Ada", "Lovelace", "moved", "to", "Oslo", "."], ["Bob", "left", "."]]
    ids = [tokenizer.encode_words(words, 32)[0] for words in sentences]
    emissions = torch.from_numpy(run_onnx(folder, ids))  # (B, T, K)
    from safetensors.torch import load_file

    weights = load_file(folder / "model.safetensors")
    crf = CRF(len(tags))
    crf.load_state_dict(
        {k.removeprefix("crf."): v for k, v in weights.items() if k.startswith("crf.")}
    )
    mask = torch.tensor([[i < len(seq) for i in range(emissions.size(1))] for seq in ids])
    paths = crf.decode(emissions, mask)
    served = client.post(f"/api/v1/jobs/{job['id']}/predict", json={"tokens": sentences}).json
    for path, answer in zip(paths, served["predictions"], strict=True):
        assert [tags[t] for t in path] == answer["tags"]


@pytest.fixture
def api_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_the_cli_exports_without_onnx(api_url, client, settings, accounts, worker, tmp_path):
    job = train(client, settings, model={"type": "transformer", "nhead": 2}, training={"epochs": 1})
    out = tmp_path / "bundle.zip"
    env = dict(os.environ, SEQTRAIN_TOKEN=accounts["alice"].token, SEQTRAIN_VAR_DIR=str(tmp_path))
    ran = subprocess.run(
        [sys.executable, "-m", "cli.main", "export", str(job["id"]), "--output", str(out)]
        + ["--no-onnx", "--url", api_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert f"wrote {out}" in ran.stdout
    folder = unpack(zipfile.ZipFile(out), tmp_path / "bundle")
    assert {p.name for p in folder.iterdir()} == FILES
    assert "No `model.onnx`: not asked." in (folder / "README.md").read_text()


def test_export_requests_are_validated_and_owned(client, settings, accounts, app):
    from tests.conftest import authed_client

    spec = tiny_spec(resources={"queue": f"exports-nobody-{uuid.uuid4().hex[:8]}"})
    job_id = client.post("/api/v1/jobs", json=spec).json["id"]
    for body, field in (({"onnx": "yes"}, "onnx"), ({"onnx": True, "format": "tar"}, "format")):
        response = client.post(f"/api/v1/jobs/{job_id}/exports", json=body)
        assert response.status_code == 422, response.json
        assert [f["path"] for f in response.json["error"]["fields"]] == [field]
    response = client.post(f"/api/v1/jobs/{job_id}/exports", json={})
    assert response.status_code == 409 and "no checkpoint" in response.json["error"]["message"]
    # Another user may not export it; an admin may (and meets the same conflict).
    bob = authed_client(app, accounts["bob"])
    assert bob.post(f"/api/v1/jobs/{job_id}/exports", json={}).status_code == 403
    root = authed_client(app, accounts["root"])
    assert root.post(f"/api/v1/jobs/{job_id}/exports", json={}).status_code == 409
    assert client.post(f"/api/v1/jobs/{job_id}/exports", data="{}").status_code == 415
    assert client.post("/api/v1/jobs/999999/exports", json={}).status_code == 404


def test_a_pretrained_job_exports_without_onnx_and_says_why(client, settings, worker, tmp_path):
    from tests.hfmodels import archive, tiny_bert
    from tests.test_pretrained_service import pretrained_spec, run_job, upload_model, words_of

    bert = tiny_bert(tmp_path / "bert", words_of("sentiment"))
    upload_model(client, archive(bert, tmp_path / "bert.zip", "zip"), "tiny-bert")
    spec = pretrained_spec(
        settings,
        "classification",
        "tiny-bert",
        model={"freeze": "encoder"},
        training={"epochs": 1},
    )
    job = run_job(client, spec)
    done, archive_file = export(client, job["id"], onnx=True)
    folder = unpack(archive_file, tmp_path / "bundle")
    assert {p.name for p in folder.iterdir()} == FILES
    onnx = done["summary"]["onnx"]
    assert onnx["exported"] is False and "pretrained" in onnx["reason"]
    parameters = done["summary"]["parameters"]
    assert 0 < parameters["in_weights"] < parameters["total"]  # the head alone was trained
    card = (folder / "README.md").read_text()
    assert "No `model.onnx`: a model of type pretrained" in card
    assert "holds only the trained part" in card
