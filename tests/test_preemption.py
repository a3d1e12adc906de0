"""Preemption on a real database: which running job is asked to make room and when not
(margin, minimum run time, maximum preemptions, not preemptible, a free worker, the
switch), and how the supervisor's requeue records it."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from shared import jobs
from shared.infra.models import Job, JobEvent, utcnow
from shared.jobs.preemption import preempt
from shared.protocol import AttemptOutcome, JobStatus
from tests.test_scheduler import register, set_job, submit, take
from worker.supervisor import Outcome, record


@pytest.fixture
def queue() -> str:
    return f"preempt-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rules(settings):
    return replace(
        settings, preemption=True, preempt_margin=20, preempt_min_runtime=60, max_preemptions=2
    )


def running(db, queue: str, worker: str, owner: int, ran_for: float = 120, **resources) -> int:
    job_id = submit(db, queue, owner, **resources)
    work = take(db, queue, worker)
    assert work is not None and work.job_id == job_id
    set_job(db, job_id, claimed_at=utcnow() - timedelta(seconds=ran_for))
    return job_id


def test_the_lowest_ranked_most_recent_running_job_makes_room(db, queue, rules, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    for name in ("w1", "w2", "w3"):
        register(db, name, queue)
    running(db, queue, "w1", alice, ran_for=500, priority=10)
    newest_low = running(db, queue, "w2", alice, ran_for=100, priority=10)
    running(db, queue, "w3", alice, ran_for=50 + 60, priority=30)
    urgent = submit(db, queue, bob, priority=90)
    assert preempt(db, rules) == [(newest_low, urgent)]
    assert jobs.get_job(db, newest_low).preempt_by == urgent
    with db.session() as session:
        noted = session.scalars(select(JobEvent.message).where(JobEvent.job_id == newest_low)).all()
    assert any(f"make room for job {urgent}" in m for m in noted), noted
    # Asked once: the next pass leaves it (and everyone else) alone.
    assert preempt(db, rules) == []


@pytest.mark.parametrize(
    ("change", "priority"),
    [
        ({}, 69),  # 69 < 50 + 20: not enough above the running job
        ({"preemption": False}, 90),
        ({"preempt_min_runtime": 600}, 90),  # it has run 120 s
    ],
)
def test_no_preemption_below_the_margin_before_the_minimum_or_when_off(
    db, queue, rules, accounts, change, priority
):
    register(db, "w1", queue)
    victim = running(db, queue, "w1", accounts["alice"].user_id)
    submit(db, queue, accounts["bob"].user_id, priority=priority)
    assert preempt(db, replace(rules, **change)) == []
    assert jobs.get_job(db, victim).preempt_by is None


def test_no_preemption_of_a_job_not_preemptible_or_preempted_enough(db, queue, rules, accounts):
    register(db, "w1", queue)
    register(db, "w2", queue)
    alice = accounts["alice"].user_id
    running(db, queue, "w1", alice, preemptible=False)
    worn = running(db, queue, "w2", alice)
    set_job(db, worn, preemptions=2)
    submit(db, queue, accounts["bob"].user_id, priority=100)
    assert preempt(db, rules) == []


def test_no_preemption_while_a_free_worker_can_start_the_job(db, queue, rules, accounts):
    register(db, "w1", queue)
    register(db, "idle", queue)
    running(db, queue, "w1", accounts["alice"].user_id)
    submit(db, queue, accounts["bob"].user_id, priority=100)
    assert preempt(db, rules) == []


def test_a_preempted_attempt_is_requeued_keeping_its_place(db, queue, rules, accounts):
    register(db, "w1", queue)
    victim = running(db, queue, "w1", accounts["alice"].user_id)
    urgent = submit(db, queue, accounts["bob"].user_id, priority=90)
    key = jobs.get_job(db, victim).rank_key
    assert preempt(db, rules) == [(victim, urgent)]
    owned, cancel, preempt_by = jobs.poll_running(db, victim, 1)
    assert (owned, cancel, preempt_by) == (True, False, urgent)
    message = f"preempted by job {urgent}; checkpointed and requeued"
    outcome = record(
        db, victim, 1, Outcome(AttemptOutcome.REQUEUED, message, 0, preempted_by=urgent), "w1"
    )
    assert outcome.status == AttemptOutcome.REQUEUED
    job = jobs.get_job(db, victim)
    assert (job.status, job.preemptions, job.preempt_by) == (JobStatus.QUEUED, 1, None)
    assert job.rank_key == key
    with db.session() as session:
        last = session.scalars(
            select(JobEvent).where(JobEvent.job_id == victim).order_by(JobEvent.id.desc())
        ).first()
    assert (last.message, last.to_status) == (message, "queued")
    # The freed worker takes the urgent job, then the preempted one before newer work.
    later = submit(db, queue, accounts["alice"].user_id)
    assert take(db, queue, "w1").job_id == urgent
    assert take(db, queue, "w2").job_id == victim
    assert take(db, queue, "w3").job_id == later


def test_a_request_to_make_room_lapses_when_the_attempt_ends(db, queue, rules, accounts):
    register(db, "w1", queue)
    victim = running(db, queue, "w1", accounts["alice"].user_id)
    submit(db, queue, accounts["bob"].user_id, priority=90)
    assert preempt(db, rules)
    assert jobs.finish(db, victim, 1, JobStatus.SUCCEEDED, "done", "w1")
    with db.session() as session:
        assert session.scalar(select(Job.preempt_by).where(Job.id == victim)) is None
