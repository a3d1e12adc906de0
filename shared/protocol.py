"""What separate processes must agree on, in one torch-free module: the trainer's exit codes,
job statuses and attempt outcomes, Redis keys and channels, artifact keys, the environment
variables one process sets for another, and the base exception of a trainer's own failures.

The trainer, the supervisor, the API and the CLI all import these names; none copies them.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """How a trainer process ends; the supervisor decides from it what happens next."""

    SUCCEEDED = 0
    CRASHED = 1  # a bug: the traceback's last lines become the job's error
    FENCED = 3  # another attempt owns the job; nothing more was written
    FAILED = 4  # retrying cannot fix it (bad data, NaN loss, out of memory); see `error:` line
    DRAINED = 5  # stopped on request (SIGUSR1) after saving a checkpoint at the current step
    RETRY = 75  # the database or artifact store failed: a new attempt resumes from a checkpoint
    PAUSED = 6  # a sweep trial reached its decision point: evaluated, checkpointed, stopped


class JobStatus(StrEnum):
    """A job's status in SQL: queued -> running -> succeeded | failed | cancelled, and
    running -> queued when an attempt is given back. A sweep's trial also goes running ->
    paused at a decision point (evaluated, checkpointed), then paused -> queued when the
    sweep promotes it (it resumes from that checkpoint) or paused -> pruned (final)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED}
)


class AttemptOutcome(StrEnum):
    """How one attempt ended, as the supervisor sees it (not a job status: a `requeued` or
    `fenced` attempt leaves the job queued or in another attempt's hands)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"  # given back; a later attempt resumes from the last checkpoint
    FENCED = "fenced"  # another attempt owns the job: nothing was recorded
    RETRY = "retry"  # worth another attempt, if the job has attempts left
    PAUSED = "paused"  # a sweep trial at a decision point; the sweep promotes or prunes it


# Target value at positions that carry no label (pads, later pieces of a word); the
# losses skip it (torch's cross_entropy default).
IGNORE_INDEX = -100

# Environment variables one process sets for the processes it starts.
RANK_DIR_ENV = "SEQTRAIN_RANK_DIR"  # each DDP rank leaves its pid and exit code there
SUPERVISOR_PID_ENV = "SEQTRAIN_SUPERVISOR_PID"  # the process a trainer must die with


def metrics_channel(job_id: int) -> str:
    """The Redis pub/sub channel the trainer publishes a job's metric rows on."""
    return f"seqtrain:job:{job_id}:metrics"


RECONCILER_LOCK_KEY = "seqtrain:reconciler:lock"


def auth_failure_key(client: str) -> str:
    """The Redis counter of a client address's failed sign-ins in the current window."""
    return f"seqtrain:authfail:{client}"


def auth_token_failure_key(token_hash: str) -> str:
    """The Redis counter of one presented (wrong) token's failures, by the token's sha256."""
    return f"seqtrain:authfail-token:{token_hash}"


def log_key(job_id: int, attempt: int, node_rank: int = 0) -> str:
    """The artifact key of an attempt's trainer log; node 0 of a multi-node attempt logs where
    a single-node attempt does, node R > 0 beside it."""
    suffix = f"-node-{node_rank}" if node_rank else ""
    return f"jobs/{job_id}/logs/attempt-{attempt}{suffix}.log"


def log_stream_key(job_id: int, attempt: int, node_rank: int = 0) -> str:
    """The Redis stream of an attempt's live log (with an `s3://` store): one entry per chunk,
    its ID `{offset + 1}-0`, its fields `offset` and `data`; `log_key` is its archive."""
    return f"seqtrain:log:{job_id}:{attempt}:{node_rank}"


class TrainerFailure(Exception):
    """A failure the trainer reports as the job's reason (bad data, a NaN loss): the message
    alone, no traceback, and no retry (ExitCode.FAILED)."""
