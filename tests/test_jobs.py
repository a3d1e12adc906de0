"""The job state machine on a real database: one claim per attempt, fencing, transitions."""

import pytest
from sqlalchemy import func, select

from shared import jobs
from shared.infra.models import JobEvent, Metric
from shared.protocol import JobStatus
from shared.spec import parse_spec
from tests.helpers import tiny_spec


def new_job(db):
    return jobs.create_job(db, parse_spec(tiny_spec()), owner_id=None)


def test_claim_succeeds_once(db):
    job = new_job(db)
    assert jobs.claim(db, job.id, "w1", 60) == 1
    assert jobs.claim(db, job.id, "w2", 60) is None  # a duplicate delivery claims nothing
    job = jobs.get_job(db, job.id)
    assert (job.status, job.attempt, job.lease_owner) == ("running", 1, "w1")
    assert job.lease_expires_at is not None and job.started_at is not None


def test_zombie_attempt_cannot_write(db):
    job = new_job(db)
    jobs.claim(db, job.id, "w1", 60)
    assert jobs.requeue(db, job.id, 1, "worker lost", "reaper")
    assert jobs.claim(db, job.id, "w2", 60) == 2
    row = {"step": 1, "epoch": 0, "split": "train", "name": "loss", "value": 1.0}
    with pytest.raises(jobs.Fenced):
        jobs.write_metrics(db, job.id, 1, [row], epoch=0, step=1)
    with pytest.raises(jobs.Fenced):
        jobs.add_checkpoint(
            db,
            job.id,
            1,
            step=1,
            epoch=1,
            uri="x",
            sha256="0" * 64,
            size=1,
            metrics={},
            keep_last=1,
        )
    assert not jobs.finish(db, job.id, 1, "succeeded", "zombie", "w1")
    assert not jobs.renew_lease(db, job.id, 1, 60)
    jobs.write_metrics(db, job.id, 2, [row], epoch=0, step=1)  # the owner can
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metric)) == 1
    assert jobs.finish(db, job.id, 2, "succeeded", "done", "w2")
    assert jobs.get_job(db, job.id).status == "succeeded"


def test_cancel_queued_is_immediate_and_terminal_refuses(db):
    job = new_job(db)
    assert jobs.request_cancel(db, job.id, "u").status == "cancelled"
    assert jobs.claim(db, job.id, "w", 60) is None
    with pytest.raises(jobs.InvalidTransition):
        jobs.request_cancel(db, job.id, "u")


def test_cancel_running_sets_the_flag(db):
    job = new_job(db)
    jobs.claim(db, job.id, "w", 60)
    assert jobs.poll_running(db, job.id, 1) == (True, False, None)
    assert jobs.request_cancel(db, job.id, "u").status == "running"
    assert jobs.poll_running(db, job.id, 1) == (True, True, None)


def test_every_transition_leaves_an_event(db):
    job = new_job(db)
    jobs.claim(db, job.id, "w", 60)
    jobs.finish(db, job.id, 1, "failed", "boom", "w")
    with db.session() as s:
        events = s.scalars(
            select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)
        ).all()
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "failed"),
    ]
    assert jobs.get_job(db, job.id).error == "boom"


def test_keep_last_prunes_old_checkpoints(db):
    job = new_job(db)
    jobs.claim(db, job.id, "w", 60)
    dropped = []
    for step in (10, 20, 30):
        dropped += jobs.add_checkpoint(
            db,
            job.id,
            1,
            step=step,
            epoch=step // 10,
            uri=f"c{step}",
            sha256="0" * 64,
            size=1,
            metrics={},
            keep_last=2,
        )
    assert dropped == ["c10"]
    assert [c.step for c in jobs.list_checkpoints(db, job.id)] == [20, 30]
    assert jobs.latest_checkpoint(db, job.id).step == 30


def test_list_is_keyset_paginated_and_filtered(db):
    ids = [new_job(db).id for _ in range(5)]
    jobs.request_cancel(db, ids[0], "u")
    page, cursor, _ = jobs.list_jobs(db, limit=2)
    assert [j.id for j in page] == ids[:-3:-1] and cursor == ids[3]
    page, cursor, _ = jobs.list_jobs(db, limit=2, before_id=cursor)
    assert [j.id for j in page] == [ids[2], ids[1]]
    page, cursor, _ = jobs.list_jobs(db, limit=2, before_id=cursor)
    assert [j.id for j in page] == [ids[0]] and cursor is None
    assert [j.id for j in jobs.list_jobs(db, status="cancelled")[0]] == [ids[0]]


def test_requeue_of_a_cancelled_job_cancels_it(db):
    job = new_job(db)
    jobs.claim(db, job.id, "w", 60)
    jobs.request_cancel(db, job.id, "u")
    assert jobs.requeue(db, job.id, 1, "worker shutting down", "w") == JobStatus.CANCELLED
    assert jobs.get_job(db, job.id).status == "cancelled"
