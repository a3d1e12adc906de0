"""/metrics: Prometheus text with real jobs, a real Redis queue and a registered worker; who
may read it; and serving it never imports torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from shared import jobs
from shared.infra.models import Job, Worker, utcnow
from shared.jobs import workers
from shared.spec import parse_spec
from tests.conftest import ROOT
from tests.helpers import tiny_spec

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def parse(text: str) -> dict[tuple[str, str], float]:
    """{(name, labels): value}; asserts every line is a comment or a well-formed sample and
    every family is announced by HELP and TYPE first."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"{name} has no # TYPE"
        samples[(name, labels or "")] = float(value)
    return samples


def live_and_busy(db, stale_seconds: float) -> dict[str, int]:
    """Live: not stopped, heard from within `stale_seconds`; busy: live, on a job."""
    now = utcnow()
    live = [
        w
        for w in workers.list_workers(db, include_stopped=True)
        if w.state != "stopped" and (now - w.heartbeat_at).total_seconds() < stale_seconds
    ]
    return {"live": len(live), "busy": sum(w.current_job_id is not None for w in live)}


def make_job(db, owner_id, queue: str) -> int:
    spec = parse_spec(tiny_spec(resources={"queue": queue}))
    return jobs.create_job(db, spec, owner_id=owner_id).id


@pytest.fixture
def queue_name() -> str:
    return f"metrics-{uuid.uuid4().hex[:8]}"


def test_metrics_report_jobs_queues_durations_workers_and_speed(
    app, db, accounts, settings, anon, queue_name
):
    owner = accounts["alice"].user_id
    waiting = make_job(db, owner, queue_name)
    app.extensions["seqtrain"].queue.enqueue_job(waiting, queue_name)
    running = make_job(db, owner, queue_name)
    attempt = jobs.claim(db, running, "metrics-worker", 60)
    assert attempt == 1
    rows = [
        {"step": 5, "epoch": 0, "split": "train", "name": "tokens_per_s", "value": 1000.0},
        {"step": 10, "epoch": 0, "split": "train", "name": "tokens_per_s", "value": 1234.5},
        {"step": 10, "epoch": 0, "split": "train", "name": "loss", "value": 0.5},
    ]
    jobs.write_metrics(db, running, attempt, rows, epoch=0, step=10)
    done = make_job(db, owner, queue_name)
    done_attempt = jobs.claim(db, done, "metrics-worker", 60)
    assert done_attempt is not None
    assert jobs.finish(db, done, done_attempt, "succeeded", "ok", "test")
    # Ours trains `running`; the stopped and the silent one must not count as live.
    for pid, name in enumerate(("metrics-worker", "stopped-worker", "silent-worker"), start=1):
        workers.register(
            db,
            name=name,
            hostname="h",
            pid=pid,
            queues=[queue_name],
            device_kind="cpu",
            device_count=1,
            devices=[],
        )
    workers.set_current_job(db, "metrics-worker", running)
    workers.mark_stopped(db, "stopped-worker")
    with db.session() as session:
        session.execute(
            update(Worker)
            .where(Worker.name == "silent-worker")
            .values(heartbeat_at=utcnow() - timedelta(seconds=settings.worker_stale_seconds + 5))
        )

    # A worker process other tests started registers itself again within a heartbeat of
    # the table being emptied: the metrics must match the registry at some moment of the
    # request, which this test reads just before and just after it.
    before = live_and_busy(db, settings.worker_stale_seconds)
    response = anon.get("/metrics")
    after = live_and_busy(db, settings.worker_stale_seconds)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = parse(response.get_data(as_text=True))
    assert got[("seqtrain_jobs", '{status="queued"}')] == 1
    assert got[("seqtrain_jobs", '{status="running"}')] == 1
    assert got[("seqtrain_jobs", '{status="succeeded"}')] == 1
    assert got[("seqtrain_jobs", '{status="failed"}')] == 0
    assert got[("seqtrain_redis_up", "")] == 1
    assert got[("seqtrain_queue_depth", f'{{queue="{queue_name}"}}')] == 1
    assert got[("seqtrain_job_duration_seconds_count", '{status="succeeded"}')] == 1
    assert got[("seqtrain_job_duration_seconds_bucket", '{status="succeeded",le="10"}')] == 1
    assert got[("seqtrain_job_duration_seconds_bucket", '{status="succeeded",le="+Inf"}')] == 1
    assert 0 <= got[("seqtrain_job_duration_seconds_sum", '{status="succeeded"}')] < 10
    assert got[("seqtrain_job_duration_seconds_count", '{status="failed"}')] == 0
    assert got[("seqtrain_workers_live", "")] in {before["live"], after["live"]}
    assert got[("seqtrain_workers_live", "")] >= 1  # ours
    assert got[("seqtrain_workers_busy", "")] in {before["busy"], after["busy"]}
    assert got[("seqtrain_workers_busy", "")] >= 1  # ours, on the running job
    # The newest value of the running attempt, not an older one.
    assert got[("seqtrain_training_tokens_per_second", f'{{job_id="{running}"}}')] == 1234.5
    assert got[("seqtrain_training_tokens_per_second_total", "")] == 1234.5


def test_histogram_buckets_are_cumulative(app, db, accounts, anon, queue_name):
    for _ in range(3):
        job_id = make_job(db, accounts["bob"].user_id, queue_name)
        attempt = jobs.claim(db, job_id, "w", 60)
        assert attempt is not None
        jobs.finish(db, job_id, attempt, "failed", "boom", "test")
    got = parse(anon.get("/metrics").get_data(as_text=True))
    buckets = [
        value
        for (name, labels), value in got.items()
        if name == "seqtrain_job_duration_seconds_bucket" and 'status="failed"' in labels
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 3


def test_metrics_answer_the_loopback_only_without_a_token(app, anon, db):
    assert anon.get("/metrics").status_code == 200
    remote = anon.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 403
    assert "SEQTRAIN_METRICS_TOKEN" in remote.json["error"]["message"]


def test_metrics_token_is_required_from_everyone_once_set(app, anon, db):
    app.config["METRICS_TOKEN"] = "scrape-" + uuid.uuid4().hex
    good = {"Authorization": f"Bearer {app.config['METRICS_TOKEN']}"}
    assert anon.get("/metrics").status_code == 401
    assert anon.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert anon.get("/metrics", headers=good).status_code == 200
    remote = anon.get("/metrics", headers=good, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 200
    # An API token is not the metrics token.
    api_token = anon.get("/metrics", headers={"Authorization": "Bearer st_x"})
    assert api_token.status_code == 401


def test_metrics_report_redis_down(settings, db, anon):
    from dataclasses import replace

    from api import create_app

    app = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    try:
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        got = parse(response.get_data(as_text=True))
        assert got[("seqtrain_redis_up", "")] == 0
        assert ("seqtrain_jobs", '{status="queued"}') in got
    finally:
        app.extensions["seqtrain"].db.dispose()


def test_serving_metrics_never_imports_torch(settings, db):
    code = (
        "import sys; from api import create_app; "
        "app = create_app(); r = app.test_client().get('/metrics'); "
        "assert r.status_code == 200, r.status_code; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SEQTRAIN_SECRET_KEY="x",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_count_queued_and_running_jobs_by_user_and_preemptions(
    app, db, accounts, anon, queue_name
):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    for owner in (alice, alice, bob, None):
        make_job(db, owner, queue_name)
    running = make_job(db, bob, queue_name)
    assert jobs.claim(db, running, "metrics-worker", 60) == 1
    with db.session() as session:
        session.execute(update(Job).where(Job.id == running).values(preemptions=2))
    done = make_job(db, alice, queue_name)
    with db.session() as session:
        session.execute(update(Job).where(Job.id == done).values(status="failed", preemptions=1))

    got = parse(anon.get("/metrics").get_data(as_text=True))
    assert got[("seqtrain_jobs_queued", '{user="alice"}')] == 2
    assert got[("seqtrain_jobs_queued", '{user="bob"}')] == 1
    assert got[("seqtrain_jobs_queued", '{user=""}')] == 1  # nobody's job
    assert got[("seqtrain_jobs_queued", '{user="root"}')] == 0  # every user, 0 for none
    assert got[("seqtrain_jobs_running", '{user="bob"}')] == 1
    assert got[("seqtrain_jobs_running", '{user="alice"}')] == 0
    assert ("seqtrain_jobs_running", '{user=""}') not in got  # no job of nobody's runs
    assert got[("seqtrain_preemptions_total", "")] == 3
