"""seqtrain.run_job: claim, supervise, done. Idempotent: a duplicate delivery claims nothing.

seqtrain.join_job: one more worker for a multi-node attempt (worker.multinode); a message
for an attempt that is over, or whose nodes are all taken, does nothing.

seqtrain.run_output: claim a job output (batch predictions, an export) and run it in a
child process (worker.outputs.supervisor); a no-op when the claim fails."""

from __future__ import annotations

import logging

from shared import jobs
from shared.infra.queue import JOIN_JOB_TASK, RUN_JOB_TASK, RUN_OUTPUT_TASK, JobQueue
from shared.jobs import workers
from shared.protocol import AttemptOutcome
from shared.spec import JobSpec
from worker import devices, multinode
from worker.celery_app import app, database, forkserver, settings, shutting_down
from worker.outputs.supervisor import run_output_now
from worker.supervisor import supervise

log = logging.getLogger(__name__)


def run_job_now(job_id: int) -> str:
    """The task's body as a plain function: returns what happened."""
    db = database()
    job = jobs.get_job(db, job_id)
    needed, offered = job.devices, devices.probe_once(settings).count
    if needed > offered:
        # Routed here by its queue but too big for this worker. The job stays queued without
        # a message; the reconciler enqueues it again, for a worker with enough devices.
        log.info(
            "job %s: needs %s devices, this worker has %s; left queued", job_id, needed, offered
        )
        return "deferred"
    attempt = jobs.claim(db, job_id, settings.worker_name, settings.lease_seconds)
    if attempt is None:
        log.info("job %s: not claimable (already taken, finished or cancelled)", job_id)
        return "skipped"
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
    return outcome.status


def join_job_now(job_id: int, attempt: int) -> str:
    """The join task's body as a plain function: returns what happened."""
    db = database()
    job = jobs.get_job(db, job_id)
    if job.devices > devices.probe_once(settings).count:
        return "skipped: too few devices here"
    _set_current_job(job_id)
    try:
        ended = multinode.join(db, settings, job_id, attempt, shutting_down)
    finally:
        _set_current_job(None)
    log.info("job %s: attempt %s: node %s", job_id, attempt, ended)
    return ended


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
