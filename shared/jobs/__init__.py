"""The job state machine. Every transition is one conditional UPDATE plus an event row.

queued -> running (claim: attempt + 1, lease) -> succeeded | failed | cancelled
running -> queued (worker drained or lost; the next claim resumes)
queued | paused -> cancelled (cancel while no attempt runs)
running -> paused -> queued | pruned (a sweep trial at a decision point: promoted or pruned)

The attempt number is the fencing token: writes by an attempt (metrics, checkpoints,
final status) go through `fenced()`, which only succeeds while the job is still running
that attempt. A zombie or a duplicate delivery therefore never writes.

The package re-exports the state machine's names (`from shared import jobs; jobs.claim(...)`):

errors.py       JobNotFound, InvalidTransition, IdempotentReplay, DatasetGone, Fenced,
                QuotaExceeded
events.py       the event row each change leaves, and notes that change no status
submission.py   NewJob, create_job(s), submit_jobs (one INSERT a batch), idempotency keys,
                the queued jobs awaiting a Redis message
queries.py      get_job, list_jobs (filters, sorts, pages), job_detail, owners, job_events,
                latest_metrics, metric and checkpoint reads
reports.py      a finished job's evaluation report (fenced write, read)
samples.py      seq2seq sample translations of each validation (fenced write, read)
outputs.py      job outputs (batch predictions, exports): their own queued -> running ->
                done state machine, fenced by attempt, and the recovery of lost ones
transitions.py  cancel, claim, fenced writes (metrics, checkpoints), lease, finish, requeue,
                recovery of lost attempts
pausing.py      a sweep trial's pause, promotion and pruning
progress.py     a job's fraction of planned steps done and its ETA
estimate.py     parameter count and peak memory per device of a spec, without torch
routing.py      whether any registered worker on the job's queue can hold it
ranking.py      the queue's order as pure functions: priority levels with aging, owners'
                shares and soft quotas
scheduler.py    which job a free worker takes (decided in SQL), multi-node reservations
                first and one at a time a queue, the claim under soft quotas
preemption.py   running jobs asked to make room for waiting jobs that outrank them
waiting.py      a queued job's position and why it waits; what each worker holds
nodes.py        the workers reserved for a multi-node attempt (job_nodes)
workers.py      the workers table: registration, heartbeat, current job
"""

from shared.jobs.errors import (
    DatasetGone,
    Fenced,
    IdempotentReplay,
    InvalidTransition,
    JobNotFound,
)
from shared.jobs.events import add_event, note_event
from shared.jobs.outputs import (
    OutputNotFound,
    cancel_output,
    claim_output,
    create_output,
    expired_output_leases,
    finish_output,
    get_output,
    list_outputs,
    output_progress,
    recover_expired_output,
    renew_output_lease,
)
from shared.jobs.pausing import pause, promote, prune
from shared.jobs.queries import (
    JOB_SORTS,
    SUMMARY_COLUMNS,
    JobPage,
    Owner,
    best_checkpoint,
    dataset_links,
    get_checkpoint,
    get_job,
    job_detail,
    job_events,
    latest_checkpoint,
    latest_metrics,
    list_checkpoints,
    list_jobs,
    list_metrics,
    owners,
)
from shared.jobs.reports import get_report, save_report
from shared.jobs.samples import list_samples, write_samples
from shared.jobs.submission import (
    NewJob,
    create_job,
    create_jobs,
    keyed_job,
    mark_enqueued,
    queued_awaiting_message,
    submit_jobs,
)
from shared.jobs.transitions import (
    add_checkpoint,
    claim,
    expired_leases,
    fenced,
    finish,
    note_attempt,
    poll_running,
    recover_expired,
    renew_lease,
    request_cancel,
    requeue,
    requeue_or_fail,
    write_metrics,
)

__all__ = [
    "JOB_SORTS",
    "SUMMARY_COLUMNS",
    "DatasetGone",
    "Fenced",
    "IdempotentReplay",
    "InvalidTransition",
    "JobNotFound",
    "JobPage",
    "NewJob",
    "OutputNotFound",
    "Owner",
    "add_checkpoint",
    "add_event",
    "best_checkpoint",
    "cancel_output",
    "claim",
    "claim_output",
    "create_job",
    "create_jobs",
    "create_output",
    "dataset_links",
    "expired_leases",
    "expired_output_leases",
    "fenced",
    "finish",
    "finish_output",
    "get_checkpoint",
    "get_job",
    "get_output",
    "get_report",
    "job_detail",
    "job_events",
    "keyed_job",
    "latest_checkpoint",
    "latest_metrics",
    "list_checkpoints",
    "list_jobs",
    "list_metrics",
    "list_outputs",
    "list_samples",
    "mark_enqueued",
    "note_attempt",
    "note_event",
    "output_progress",
    "owners",
    "pause",
    "poll_running",
    "promote",
    "prune",
    "queued_awaiting_message",
    "recover_expired",
    "recover_expired_output",
    "renew_lease",
    "renew_output_lease",
    "request_cancel",
    "requeue",
    "requeue_or_fail",
    "save_report",
    "submit_jobs",
    "write_metrics",
    "write_samples",
]
