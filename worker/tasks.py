"""seqtrain.run_job: take the best work for this worker (shared.jobs.scheduler), supervise
it, done. A message only wakes a worker: which job it runs is decided in SQL then, and a
message with nothing left to take does nothing.

seqtrain.join_job: one more worker wanted by a multi-node attempt (worker.multinode); a
wake-up like run_job, which takes a reservation's free node rank first.

seqtrain.run_output: claim a job output (batch predictions, an export) and run it in a
child process (worker.outputs.supervisor); a no-op when the claim fails."""

from __future__ import annotations

import logging

from shared import jobs
from shared.infra.db import Database
from shared.infra.models import Job
from shared.infra.queue import JOIN_JOB_TASK, RUN_JOB_TASK, RUN_OUTPUT_TASK, JobQueue
from shared.jobs import scheduler, workers
from shared.jobs.ranking import Policy
from shared.protocol import AttemptOutcome, JobStatus
from shared.spec import JobSpec
from worker import devices, multinode
from worker.celery_app import app, database, forkserver, settings, shutting_down
from worker.outputs.supervisor import run_output_now
from worker.supervisor import supervise

log = logging.getLogger(__name__)


def run_job_now(job_id: int) -> str:
    """The task's body as a plain function: returns what happened. The message's job is a
    hint: this worker takes whatever the scheduler says is best for it now (a rank of a
    multi-node job reserving workers, or the best queued job it can hold)."""
    db = database()
    queue = _queue_of(db, job_id)
    work = scheduler.next_work(
        db,
        settings.worker_name,
        queue,
        devices.probe_once(settings).count,
        settings.lease_seconds,
        Policy(settings.priority_aging, settings.fair_share),
        settings.worker_stale_seconds,
    )
    if work is None:
        log.info("queue %s: nothing this worker can take now (message for job %s)", queue, job_id)
        return "skipped"
    if work.job_id != job_id:
        _wake_again(db, job_id)
    if work.node_rank is not None:
        return _join(db, work)
    return _run(db, work.job_id, work.attempt)


def _queue_of(db: Database, job_id: int) -> str:
    try:
        return jobs.get_job(db, job_id).queue
    except jobs.JobNotFound:
        return settings.default_queue


def _wake_again(db: Database, job_id: int) -> None:
    """This worker took another job than the message named: that job, still queued,
    keeps a message of its own (what the reconciler checks)."""
    try:
        job = jobs.get_job(db, job_id)
        if job.status == JobStatus.QUEUED:
            JobQueue(settings).enqueue_job(job_id, job.queue)
    except Exception as exc:  # the reconciler enqueues it again
        log.warning("job %s: its message was not put back: %s", job_id, exc)


def _run(db: Database, job_id: int, attempt: int) -> str:
    """Supervise a claimed attempt (node 0 of a multi-node one) until it ends."""
    job = jobs.get_job(db, job_id)
    log.info("job %s: attempt %s started", job_id, attempt)
    _set_current_job(job_id)
    spec = JobSpec.model_validate(job.spec)
    try:
        if spec.resources.nodes > 1:
            outcome = multinode.lead(db, settings, job_id, attempt, spec, shutting_down)
        else:
            outcome = supervise(
                db, settings, job_id, attempt, spec, shutting_down, forkserver=forkserver()
            )
    finally:
        _set_current_job(None)
    log.info(
        "job %s: attempt %s %s (%s)",
        job_id,
        attempt,
        outcome.status,
        outcome.message.splitlines()[0],
    )
    if outcome.status == AttemptOutcome.REQUEUED:
        try:
            JobQueue(settings).enqueue_job(job_id, jobs.get_job(db, job_id).queue)
        except Exception as exc:  # the reconciler enqueues it once Redis is back
            log.warning("job %s: enqueue after requeue failed: %s", job_id, exc)
    _wake_held(db, job)
    return outcome.status


def _wake_held(db: Database, job: Job) -> None:
    """The owner's next job may have waited on a soft quota this attempt held: it gets a
    message now, not at the reconciler's next pass (its own was spent on a worker that
    could not start it)."""
    try:
        held = scheduler.held_by_quota(db, job.owner_id, job.queue)
        if held is not None:
            JobQueue(settings).enqueue_job(held, job.queue)
    except Exception as exc:  # the reconciler enqueues it
        log.warning("job %s: the owner's next job was not woken: %s", job.id, exc)


def _join(db: Database, work: scheduler.Work) -> str:
    """Run this worker's node rank of a multi-node attempt."""
    _set_current_job(work.job_id)
    try:
        ended = multinode.join(
            db, settings, work.job_id, work.attempt, shutting_down, work.node_rank
        )
    finally:
        _set_current_job(None)
    log.info("job %s: attempt %s: node %s", work.job_id, work.attempt, ended)
    return ended


def join_job_now(job_id: int, attempt: int) -> str:
    """A multi-node attempt's call for one more worker: a wake-up like any other message
    (the reservation in progress is what a free worker takes first)."""
    return run_job_now(job_id)


def _set_current_job(job_id: int | None) -> None:
    try:
        workers.set_current_job(database(), settings.worker_name, job_id)
    except Exception as exc:  # shown on the workers page only; never stops a job
        log.warning("could not record the current job: %s", exc)


@app.task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: int) -> str:
    return run_job_now(int(job_id))


@app.task(name=JOIN_JOB_TASK, ignore_result=True)
def join_job(job_id: int, attempt: int) -> str:
    return join_job_now(int(job_id), int(attempt))


@app.task(name=RUN_OUTPUT_TASK, ignore_result=True)
def run_output(output_id: int) -> str:
    return run_output_now(database(), settings, int(output_id), shutting_down)
