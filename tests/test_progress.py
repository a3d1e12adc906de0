"""A job's progress (shared/jobs/progress.py): computed once on the server, the same on the
job detail and the jobs board, and drawn as sent by `seqtrain submit --follow` (cli/watch.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from cli.watch import progress_line, progress_snapshot
from shared import jobs
from shared.infra.models import Job
from shared.jobs.progress import job_progress as server_progress
from shared.spec import parse_spec
from tests.helpers import tiny_spec

NOBODY = {"queue": "nobody-listens"}


def make_job(db, owner, name="job", **sections):
    spec = tiny_spec(name=name, resources=NOBODY, **sections)
    return jobs.create_job(db, parse_spec(spec), owner.user_id).id


def run_epoch(db, job_id, attempt, step=10, epoch=1, loss=0.5):
    rows = [
        {"step": step, "epoch": epoch, "split": "train", "name": "loss", "value": loss},
        {"step": step, "epoch": epoch, "split": "val", "name": "loss", "value": loss + 0.1},
    ]
    jobs.write_metrics(db, job_id, attempt, rows, epoch=epoch, step=step)


def board_row(client, job_id):
    return next(j for j in client.get("/api/v1/jobs/board").json["jobs"] if j["id"] == job_id)


def test_job_detail_carries_the_progress_the_board_shows(client, db, accounts):
    alice = accounts["alice"]
    queued, started, running = (make_job(db, alice, name) for name in ("q", "s", "r"))
    jobs.claim(db, started, "w", 60)  # running, no step yet
    run_epoch(db, running, jobs.claim(db, running, "w", 60))  # 10 steps an epoch, 3 planned

    for job_id in (queued, started):  # step 0: nothing tells the pace, yet 0 % is known
        detail = client.get(f"/api/v1/jobs/{job_id}").json
        row = board_row(client, job_id)
        assert detail["step"] == 0
        assert detail["progress"] == {"fraction": 0.0, "eta_seconds": None}
        assert row["progress"] == detail["progress"]["fraction"] and row["eta_seconds"] is None
        snapshot = progress_snapshot(detail)
        assert snapshot["progress"] == 0.0 and "[------------------------]   0%" in progress_line(
            snapshot
        )

    detail = client.get(f"/api/v1/jobs/{running}").json
    row = board_row(client, running)
    assert detail["progress"]["fraction"] == pytest.approx(1 / 3) == row["progress"]
    assert detail["progress"]["eta_seconds"] >= 0 and row["eta_seconds"] >= 0
    assert progress_snapshot(detail)["loss"] == 0.5


def job_progress(job, now):
    """What --follow draws of `job` when the server computed its progress at `now`."""
    row = Job(
        status=job["status"],
        spec=job["spec"],
        step=job["step"],
        started_at=datetime.fromisoformat(job["started_at"]),
    )
    sent = server_progress(row, job["latest_metrics"], now)._asdict()
    return progress_snapshot({**job, "progress": sent})


def test_job_progress_tells_fraction_and_eta():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    job = {
        "id": 7,
        "status": "running",
        "attempt": 1,
        "epoch": 1,
        "step": 15,
        "started_at": (now - timedelta(seconds=30)).isoformat(),
        "spec": {"training": {"epochs": 4}},
        "latest_metrics": {
            "train/loss": {"value": 0.25, "step": 15, "epoch": 1},
            "val/loss": {"value": 0.3, "step": 10, "epoch": 1},  # 10 steps an epoch
        },
    }
    p = job_progress(job, now)
    assert p["progress"] == 15 / 40 and p["eta_seconds"] == 50.0 and p["loss"] == 0.25
    line = progress_line(p)
    assert "epoch 1/4" in line and "step 15" in line and "ETA 0:00:50" in line and "38%" in line
    job["latest_metrics"] = {}  # the first epoch has not told the pace yet
    assert job_progress(job, now)["progress"] is None and "?" in progress_line(
        job_progress(job, now)
    )
