"""The seqtrain CLI against a live HTTP API (werkzeug on a free port) and the test worker."""

import json
import os
import subprocess
import sys
import threading

import pytest
import yaml
from werkzeug.serving import make_server

from tests.conftest import ROOT
from tests.helpers import SMALL_TSV, tiny_spec, upload


@pytest.fixture
def api_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture(autouse=True)
def cli_env(accounts, tmp_path, monkeypatch):
    """The CLI authenticates as alice; no var/dev-token is found by accident."""
    monkeypatch.setenv("SEQTRAIN_TOKEN", accounts["alice"].token)
    monkeypatch.setenv("SEQTRAIN_VAR_DIR", str(tmp_path / "var"))


def seqtrain(*args, url=None, env=None):
    command = [sys.executable, "-m", "cli.main", *args]
    if url:
        command += ["--url", url]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
        env=env or dict(os.environ),
    )


def write_spec(tmp_path, spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_submit_wait_succeeds_and_exits_zero(api_url, settings, worker, tmp_path):
    path = write_spec(tmp_path, tiny_spec(training={"epochs": 2}))
    result = seqtrain(
        "submit", str(path), "--wait", "--queue", settings.default_queue, "--json", url=api_url
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout.strip().splitlines()[-1])
    assert job["status"] == "succeeded" and job["epoch"] == 2

    shown = seqtrain("show", str(job["id"]), url=api_url)
    assert shown.returncode == 0 and "succeeded" in shown.stdout and "val/accuracy" in shown.stdout
    listed = json.loads(seqtrain("jobs", "--json", url=api_url).stdout)
    assert job["id"] in [j["id"] for j in listed["jobs"]]


def test_submit_wait_exits_nonzero_when_the_job_fails(api_url, client, settings, worker, tmp_path):
    created = upload(client, SMALL_TSV, format="tsv", text_column="sentence", label_column="label")
    (settings.artifact_root / f"datasets/{created.json['sha256']}").unlink()
    path = write_spec(tmp_path, tiny_spec(data={"dataset": created.json["reference"]}))
    result = seqtrain("submit", str(path), "--wait", "--queue", settings.default_queue, url=api_url)
    assert result.returncode == 1
    assert "failed" in result.stdout and "missing from the artifact store" in result.stderr


def test_bad_spec_prints_the_fields(api_url, tmp_path):
    path = write_spec(tmp_path, tiny_spec(model={"type": "cnn"}, training={"lr": 0}))
    result = seqtrain("submit", str(path), url=api_url)
    assert result.returncode == 1
    assert (
        "HTTP 422" in result.stderr
        and "model.type" in result.stderr
        and "training.lr" in result.stderr
    )


def test_cancel_and_unreadable_files(api_url, tmp_path):
    path = write_spec(tmp_path, tiny_spec(resources={"queue": "nobody-listens"}))
    created = json.loads(seqtrain("submit", str(path), "--json", url=api_url).stdout)
    result = seqtrain("cancel", str(created["id"]), url=api_url)
    assert result.returncode == 0 and "cancelled" in result.stdout
    again = seqtrain("cancel", str(created["id"]), url=api_url)
    assert again.returncode == 1 and "HTTP 409" in again.stderr
    missing = seqtrain("submit", str(tmp_path / "nope.yaml"), url=api_url)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    wrong = seqtrain("submit", str(tmp_path / "list.yaml"), url=api_url)
    assert wrong.returncode == 1 and "must hold a mapping" in wrong.stderr


def test_token_sources(api_url, accounts, tmp_path):
    env = dict(os.environ)
    env.pop("SEQTRAIN_TOKEN")
    missing = seqtrain("jobs", url=api_url, env=env)
    assert missing.returncode == 1 and "no API token" in missing.stderr
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / "dev-token").write_text(accounts["bob"].token + "\n")
    assert seqtrain("jobs", "--json", url=api_url, env=env).returncode == 0
    wrong = seqtrain("jobs", "--token", "st_wrong", url=api_url, env=env)
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr


def test_users_and_tokens_commands(settings, db):
    env = dict(os.environ, DATABASE_URL=settings.database_url)
    created = seqtrain("users", "create", "carol", "--admin", env=env)
    assert created.returncode == 0 and "admin" in created.stdout
    again = seqtrain("users", "create", "carol", env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    token = seqtrain("tokens", "create", "carol", "--label", "laptop", env=env).stdout.strip()
    assert token.startswith("st_")
    from shared.auth import authenticate

    assert authenticate(db, token).name == "carol"
    listed = seqtrain("tokens", "list", "carol", env=env).stdout
    assert token[:10] in listed and token not in listed and "laptop" in listed
    token_id = listed.split()[0]
    assert seqtrain("tokens", "revoke", token_id, env=env).returncode == 0
    assert authenticate(db, token) is None
    nobody = seqtrain("tokens", "create", "nobody", env=env)
    assert nobody.returncode == 1 and "no user named" in nobody.stderr


def test_datasets_upload_list_show_delete(api_url, tmp_path):
    good = tmp_path / "reviews.tsv"
    good.write_bytes(SMALL_TSV)
    result = seqtrain(
        "datasets",
        "upload",
        str(good),
        "--format",
        "tsv",
        "--text-column",
        "sentence",
        "--label-column",
        "label",
        "--json",
        url=api_url,
    )
    assert result.returncode == 0, result.stderr
    dataset = json.loads(result.stdout)
    assert dataset["rows"] == 80 and dataset["name"] == "reviews.tsv"
    assert "reviews.tsv" in seqtrain("datasets", "list", url=api_url).stdout
    shown = json.loads(seqtrain("datasets", "show", str(dataset["id"]), url=api_url).stdout)
    assert shown["stats"]["label_counts"] == {"neg": 40, "pos": 40}
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"sentence\tlabel\nna\xefve\tpos\n")
    refused = seqtrain(
        "datasets", "upload", str(bad), "--format", "tsv", "--text-column", "sentence", url=api_url
    )
    assert (
        refused.returncode == 1
        and "line 2, byte 17" in refused.stderr
        and "encoding" in refused.stderr
    )
    assert seqtrain("datasets", "delete", str(dataset["id"]), url=api_url).returncode == 0
    assert seqtrain("datasets", "show", str(dataset["id"]), url=api_url).returncode == 1
