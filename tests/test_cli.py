"""The seqtrain CLI against a live HTTP API (werkzeug on a free port) and the test worker."""

import json
import os
import subprocess
import sys
import threading
import uuid

import pytest
import yaml
from werkzeug.serving import make_server

from tests.conftest import ROOT
from tests.helpers import SMALL_TSV, tiny_spec, upload

pytestmark = pytest.mark.e2e


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


def test_submit_wait_exits_nonzero_when_the_job_fails(
    api_url, client, settings, store, worker, tmp_path
):
    data = SMALL_TSV + f"great film {uuid.uuid4().hex}\tpos\n".encode()  # in no worker's cache
    created = upload(client, data, format="tsv", text_column="sentence", label_column="label")
    store.delete(f"datasets/{created.json['sha256']}")
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


def test_submit_priority_overrides_the_spec(api_url, client, tmp_path):
    path = write_spec(tmp_path, tiny_spec(resources={"queue": f"nobody-{uuid.uuid4().hex[:6]}"}))
    result = seqtrain("submit", str(path), "--priority", "high", "--json", url=api_url)
    assert result.returncode == 0, result.stderr
    job = client.get(f"/api/v1/jobs/{json.loads(result.stdout)['id']}").json
    assert job["priority"] == 75 and job["spec"]["resources"]["priority"] == 75
    bad = seqtrain("submit", str(path), "--priority", "urgent", url=api_url)
    assert bad.returncode == 1 and "resources.priority" in bad.stderr


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


def test_submit_follow_prints_progress_then_the_result(api_url, settings, worker, tmp_path):
    path = write_spec(tmp_path, tiny_spec(training={"epochs": 2, "log_every_steps": 1}))
    result = seqtrain(
        "submit", str(path), "--follow", "--queue", settings.default_queue, url=api_url
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    bars = [line for line in lines if line.startswith("job ") and "epoch" in line]
    assert bars and "step" in bars[-1] and "loss" in bars[-1]
    assert "[########################] 100%" in bars[-1] and "epoch 2/2" in bars[-1]
    assert lines[-1].startswith("job ") and " succeeded " in lines[-1]

    as_json = seqtrain(
        "submit", str(path), "--follow", "--json", "--queue", settings.default_queue, url=api_url
    )
    assert as_json.returncode == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    snapshots = [r["progress"] for r in records[:-1]]
    assert snapshots and all({"epoch", "step", "loss", "eta_seconds"} <= set(p) for p in snapshots)
    assert records[-1]["status"] == "succeeded"


def test_logs_and_retry(api_url, settings, worker, tmp_path):
    path = write_spec(tmp_path, tiny_spec(training={"epochs": 1}))
    first = seqtrain(
        "submit", str(path), "--wait", "--json", "--queue", settings.default_queue, url=api_url
    )
    assert first.returncode == 0, first.stderr
    job_id = json.loads(first.stdout.splitlines()[-1])["id"]

    printed = seqtrain("logs", str(job_id), url=api_url)
    assert printed.returncode == 0, printed.stderr
    assert "done: step" in printed.stdout
    chunks = [
        json.loads(line)
        for line in seqtrain("logs", str(job_id), "--json", url=api_url).stdout.splitlines()
    ]
    assert chunks[0]["attempt"] == 1 and chunks[0]["attempts"] == [1]
    assert "".join(c["text"] for c in chunks) == printed.stdout and chunks[-1]["complete"]
    assert seqtrain("logs", str(job_id), "--attempt", "2", url=api_url).returncode == 1

    again = seqtrain("retry", str(job_id), "--json", url=api_url)
    assert again.returncode == 0, again.stderr
    created = json.loads(again.stdout)
    assert created["id"] != job_id and created["status"] == "queued"
    # -f follows the new job's log from before it starts until it ends.
    followed = seqtrain("logs", str(created["id"]), "-f", "--poll", "0.1", url=api_url)
    assert followed.returncode == 0, followed.stderr
    assert "done: step" in followed.stdout
    waited = seqtrain("retry", str(created["id"]), "--wait", url=api_url)
    assert waited.returncode == 0 and " succeeded " in waited.stdout


def test_retry_refuses_an_unfinished_job(api_url, tmp_path):
    path = write_spec(tmp_path, tiny_spec(resources={"queue": "nobody-listens"}))
    created = json.loads(seqtrain("submit", str(path), "--json", url=api_url).stdout)
    refused = seqtrain("retry", str(created["id"]), url=api_url)
    assert refused.returncode == 1 and "HTTP 409" in refused.stderr


def test_admin_commands_speak_json(settings, db):
    env = dict(os.environ, DATABASE_URL=settings.database_url)
    user = json.loads(seqtrain("users", "create", "dora", "--json", env=env).stdout)
    assert user["name"] == "dora" and user["is_admin"] is False
    token = json.loads(seqtrain("tokens", "create", "dora", "--json", env=env).stdout)
    assert token["token"].startswith("st_") and token["user"] == "dora"
    listed = json.loads(seqtrain("tokens", "list", "dora", "--json", env=env).stdout)
    assert [t["id"] for t in listed] == [token["id"]] and listed[0]["revoked_at"] is None
    assert token["token"] not in json.dumps(listed)
    revoked = seqtrain("tokens", "revoke", str(token["id"]), "--json", env=env)
    assert json.loads(revoked.stdout) == {"id": token["id"], "revoked": True}
    users = json.loads(seqtrain("users", "list", "--json", env=env).stdout)
    assert "dora" in [u["name"] for u in users]


def test_json_logs_from_the_api_and_the_worker(settings, db, tmp_path):
    """SEQTRAIN_LOG_FORMAT=json: gunicorn's and Celery's log lines are JSON objects."""
    from cli.services import api_command, free_port, stop, wait_for_port, worker_command
    from tests.conftest import wait_until, worker_env

    env = dict(worker_env(settings), SEQTRAIN_LOG_FORMAT="json", SEQTRAIN_SECRET_KEY="x")
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker")}
    with logs["api"].open("w") as api_log, logs["worker"].open("w") as worker_log:
        api = subprocess.Popen(
            api_command("127.0.0.1", port, 1),
            env=env,
            cwd=ROOT,
            stdout=api_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = subprocess.Popen(
            worker_command(f"json-logs-{port}"),
            env=env,
            cwd=ROOT,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, api, "api")
        import urllib.request

        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read()
        wait_until(lambda: "ready." in logs["worker"].read_text(), 60, message="worker ready")
        wait_until(lambda: "/healthz" in logs["api"].read_text(), 10, message="access log")
    finally:
        stop(api)
        stop(worker)

    def records(path):
        found = []
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
            else:  # only Python's own warnings (e.g. Celery's, when run as root) are not logs
                assert not line.startswith("[20") and "celery@" not in line, line
        return found

    api_records = records(logs["api"])
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in api_records)
    assert any(r["logger"] == "gunicorn.access" and "/healthz" in r["message"] for r in api_records)
    worker_records = records(logs["worker"])
    assert any(r["message"].endswith("ready.") for r in worker_records)
