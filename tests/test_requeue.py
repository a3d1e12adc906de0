"""Giving an attempt back on a real database: requeued, cancelled when a cancel was
requested, and reported as fenced (never as cancelled by the user) when another attempt
owns the job."""

import pytest
from sqlalchemy import select

from shared import jobs
from shared.infra.models import JobEvent
from shared.protocol import AttemptOutcome, JobStatus
from shared.spec import parse_spec
from tests.helpers import tiny_spec
from worker.supervisor import Outcome, record


def running_job(db, max_attempts=3):
    spec = parse_spec(tiny_spec(resources={"max_attempts": max_attempts}))
    job = jobs.create_job(db, spec, owner_id=None)
    assert jobs.claim(db, job.id, "w1", 60) == 1
    return job.id


def taken_over(db, job_id, cancel_the_new_attempt):
    """Attempt 1 lost the job: it was requeued behind its back and claimed as attempt 2."""
    assert jobs.recover_expired(db, job_id, 1, "reconciler") is None  # its lease is live
    assert jobs.requeue(db, job_id, 1, "worker lost", "reconciler")
    assert jobs.claim(db, job_id, "w2", 60) == 2
    if cancel_the_new_attempt:
        jobs.request_cancel(db, job_id, "u")


def messages(db, job_id):
    with db.session() as s:
        return list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))


def test_requeue_requeues_a_running_attempt(db):
    job_id = running_job(db)
    assert jobs.requeue(db, job_id, 1, "worker shutting down", "w1") == JobStatus.QUEUED
    assert jobs.get_job(db, job_id).status == "queued"


@pytest.mark.parametrize("cancel_the_new_attempt", [False, True])
def test_a_fenced_requeue_is_reported_fenced_not_cancelled(db, cancel_the_new_attempt):
    job_id = running_job(db)
    taken_over(db, job_id, cancel_the_new_attempt)
    before = messages(db, job_id)

    assert jobs.requeue(db, job_id, 1, "worker shutting down", "w1") is None
    assert jobs.requeue_or_fail(db, job_id, 1, "trainer killed", "w1") is None
    attempt_two_untouched(db, job_id, before, cancel_the_new_attempt)


@pytest.mark.parametrize("cancel_the_new_attempt", [False, True])
@pytest.mark.parametrize("asked", [AttemptOutcome.REQUEUED, AttemptOutcome.RETRY])
def test_the_supervisor_reports_a_fenced_requeue_as_fenced(db, asked, cancel_the_new_attempt):
    job_id = running_job(db)
    taken_over(db, job_id, cancel_the_new_attempt)
    before = messages(db, job_id)

    outcome = record(db, job_id, 1, Outcome(asked, "worker shutting down", 5), "w1")
    assert outcome.status == AttemptOutcome.FENCED
    assert "cancelled" not in outcome.message
    attempt_two_untouched(db, job_id, before, cancel_the_new_attempt)


def attempt_two_untouched(db, job_id, before, cancel_the_new_attempt):
    """Attempt 2 still owns the job, untouched, and nothing was recorded for attempt 1."""
    job = jobs.get_job(db, job_id)
    assert (job.status, job.attempt, job.cancel_requested) == (
        "running",
        2,
        cancel_the_new_attempt,
    )
    assert messages(db, job_id) == before


def test_a_fenced_final_status_is_reported_fenced(db):
    job_id = running_job(db)
    taken_over(db, job_id, cancel_the_new_attempt=False)
    for asked in (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.CANCELLED):
        outcome = record(db, job_id, 1, Outcome(asked, "zombie", 0), "w1")
        assert outcome.status == AttemptOutcome.FENCED
    assert jobs.get_job(db, job_id).status == "running"


@pytest.mark.parametrize("asked", [AttemptOutcome.REQUEUED, AttemptOutcome.RETRY])
def test_a_cancel_requested_requeue_is_reported_cancelled(db, asked):
    job_id = running_job(db)
    jobs.request_cancel(db, job_id, "u")
    outcome = record(db, job_id, 1, Outcome(asked, "worker shutting down", 5), "w1")
    assert (outcome.status, outcome.message) == (AttemptOutcome.CANCELLED, "cancelled by user")
    job = jobs.get_job(db, job_id)
    assert (job.status, job.error) == ("cancelled", "cancelled by user")


def test_requeue_honours_a_pending_cancel(db):
    job_id = running_job(db)
    jobs.request_cancel(db, job_id, "u")
    assert jobs.requeue(db, job_id, 1, "worker shutting down", "w1") == JobStatus.CANCELLED
    assert jobs.get_job(db, job_id).status == "cancelled"
    assert jobs.requeue(db, job_id, 1, "worker shutting down", "w1") is None  # over: fenced


def test_requeue_or_fail_reports_what_it_did(db):
    job_id = running_job(db, max_attempts=2)
    assert jobs.requeue_or_fail(db, job_id, 1, "crashed", "w1") == JobStatus.QUEUED
    assert jobs.claim(db, job_id, "w1", 60) == 2
    outcome = record(db, job_id, 2, Outcome(AttemptOutcome.RETRY, "crashed", 1), "w1")
    assert outcome.status == AttemptOutcome.FAILED
    assert jobs.get_job(db, job_id).status == "failed"
