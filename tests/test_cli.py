"""The seqtrain CLI against a live HTTP API (werkzeug on a free port) and the test worker."""

import json
import subprocess
import sys
import threading

import pytest
import yaml
from werkzeug.serving import make_server

from tests.conftest import ROOT
from tests.helpers import tiny_spec


@pytest.fixture
def api_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def seqtrain(*args, url=None):
    command = [sys.executable, "-m", "cli.main", *args]
    if url:
        command += ["--url", url]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=180, check=False
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


def test_submit_wait_exits_nonzero_when_the_job_fails(api_url, settings, worker, tmp_path):
    path = write_spec(tmp_path, tiny_spec(data={"label_field": "stars"}))
    result = seqtrain("submit", str(path), "--wait", "--queue", settings.default_queue, url=api_url)
    assert result.returncode == 1
    assert "failed" in result.stdout and "no column 'stars'" in result.stderr


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
