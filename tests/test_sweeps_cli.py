"""`seqtrain sweep(s)` against a live HTTP API (werkzeug on a free port) and real SQL: submit a
sweep file, list, show the trials table, cancel, --wait, and the errors that name fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from sqlalchemy import update

from shared.infra.models import Job
from shared.protocol import JobStatus
from shared.spec import parse_spec
from shared.sweeps import store
from shared.sweeps.spec import trial_spec
from tests import test_cli
from tests.conftest import ROOT, wait_until
from tests.helpers import tiny_spec

# The tests make the trials (conftest.reconcilers_paused).
pytestmark = pytest.mark.usefixtures("reconcilers_paused")

# The CLI tests' fixtures: a live API server, and the CLI signed in as alice.
api_url = test_cli.api_url
cli_env = test_cli.cli_env


def command(*args: str, url: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args, "--url", url]


def seqtrain(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args, url=url),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env=dict(os.environ),
    )


def sweep_file(tmp_path, **overrides):
    request = {
        "name": "cli-sweep",
        "spec": tiny_spec(resources={"queue": "nobody-listens"}),
        "parameters": {
            "training.lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
            "model.pooling": {"type": "categorical", "choices": ["mean", "max"]},
        },
        "objective": {"metric": "val/accuracy", "direction": "maximize"},
        "max_trials": 4,
        **overrides,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(request))
    return path


def add_trial(db, sweep_id: int, number: int, lr: float) -> int:
    sweep = store.get_sweep(db, sweep_id)
    params = {"training.lr": lr, "model.pooling": "max"}
    spec = parse_spec(trial_spec(sweep.config["spec"], params, f"trial {number}"))
    job_id = store.create_trial(db, sweep, number, number, params, spec, (None, 1))
    assert job_id is not None
    return job_id


def test_submit_list_show_cancel(api_url, db, tmp_path):
    made = seqtrain("sweep", "submit", str(sweep_file(tmp_path)), "--json", url=api_url)
    assert made.returncode == 0, made.stderr
    sweep_id = json.loads(made.stdout)["id"]
    assert store.get_sweep(db, sweep_id).name == "cli-sweep"
    plain = seqtrain("sweeps", "submit", str(sweep_file(tmp_path)), "--name", "other", url=api_url)
    assert plain.returncode == 0 and plain.stdout.strip() == f"sweep {sweep_id + 1}: running"

    first = add_trial(db, sweep_id, 0, 0.002)
    second = add_trial(db, sweep_id, 1, 0.005)
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == first)
            .values(status=JobStatus.SUCCEEDED, step=40, total_steps=40)
        )
    store.update_trial(db, sweep_id, 0, value=0.8125)
    store.set_best(db, sweep_id, (0, 0.8125))

    listed = seqtrain("sweeps", "list", url=api_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and "other" in lines[0]
    assert "cli-sweep" in lines[1] and "1/4" in lines[1] and "best #0 0.8125" in lines[1]
    as_json = json.loads(seqtrain("sweeps", "list", "--json", url=api_url).stdout)
    assert [s["id"] for s in as_json["sweeps"]] == [sweep_id + 1, sweep_id]

    shown = seqtrain("sweeps", "show", str(sweep_id), url=api_url)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"sweep {sweep_id} 'cli-sweep': running" in out
    assert "maximize val/accuracy" in out and "3.00 epochs trained" in out
    assert "1 queued, 1 succeeded" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert rows[0][:5] == ["0", str(first), "succeeded", "0.8125", "3.00/3"]
    assert rows[0][5:] == ["training.lr=0.0020", "model.pooling=max"]
    assert rows[1][:5] == ["1", str(second), "queued", "-", "0.00/3"]

    cancelled = seqtrain("sweeps", "cancel", str(sweep_id), url=api_url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"sweep {sweep_id}: cancel requested"
    assert store.get_sweep(db, sweep_id).cancel_requested is True
    detail = json.loads(seqtrain("sweep", "show", str(sweep_id), "--json", url=api_url).stdout)
    assert {t["number"]: t["status"] for t in detail["trials"]} == {0: "succeeded", 1: "cancelled"}

    store.finish_sweep(db, sweep_id, "cancelled", None, None)
    again = seqtrain("sweeps", "cancel", str(sweep_id), url=api_url)
    assert again.returncode == 1 and "HTTP 409" in again.stderr and "cancelled" in again.stderr


def test_a_bad_sweep_prints_the_field_and_exits_nonzero(api_url, tmp_path, db):
    path = sweep_file(tmp_path, parameters={"training.nope": {"type": "int", "low": 1, "high": 2}})
    result = seqtrain("sweep", "submit", str(path), url=api_url)
    assert result.returncode == 1
    assert "HTTP 422: invalid sweep: parameters.training.nope" in result.stderr
    assert "parameters.training.nope: training.nope is not a job spec field" in result.stderr
    (tmp_path / "list.yaml").write_text("- 1\n")
    listed = seqtrain("sweep", "submit", str(tmp_path / "list.yaml"), url=api_url)
    assert listed.returncode == 1 and "must hold a mapping" in listed.stderr
    missing = seqtrain("sweeps", "show", "999999", url=api_url)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


def test_submit_wait_follows_the_sweep_to_its_end(api_url, db, tmp_path):
    proc = subprocess.Popen(
        command("sweep", "submit", str(sweep_file(tmp_path)), "--wait", url=api_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    try:
        made = wait_until(lambda: store.list_sweeps(db), 60, message="the sweep to be stored")
        add_trial(db, made[0].id, 0, 0.002)
        store.finish_sweep(db, made[0].id, "succeeded", (0, 0.7), None)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines()[0] == f"sweep {made[0].id}: running"
    assert "succeeded" in out.splitlines()[-1] and "best #0 0.7000" in out.splitlines()[-1]
