"""SQLAlchemy 2 ORM tables. SQL is the source of truth; Redis only carries job ids.

users         people and scripts; admins see everything
api_tokens    bearer tokens, stored as sha256 hashes only
user_sessions status-page sign-ins: the token each came from, expiry, end; id stored hashed
datasets      uploaded files (content-addressed in the artifact store), parse options, statistics
models        pretrained base models: uploaded archives (content-addressed), their architecture
jobs          one row a job: owner, spec, status, attempt (the fencing token), lease, cancel flag
job_datasets  which dataset versions a job trains on (resolved at submit: train, validation, test)
job_events    every status transition: who, when, why
metrics       (job, attempt, step, epoch, split, name) -> value
job_samples   seq2seq: sample translations (source, reference, hypothesis) of each validation
checkpoints   one row per saved checkpoint file in the artifact store
workers       live Celery workers: devices, queues, heartbeat, current job
job_nodes     the workers reserved for a multi-node attempt, one row a node rank
reports       a finished job's evaluation report (JSON), written by its last attempt
job_outputs   work a worker does on a trained job through the queue: batch predictions
              over a dataset, exported bundles; each with its own attempt (fencing) and file
sweeps        hyperparameter searches: base spec, distributions, objective, sampler, pruner
sweep_trials  a sweep's trials: Optuna's trial number, its job, parameters, objective

Optuna keeps each sweep's study in its own tables (studies, trials, ..., version_info) in the
same database, with its own Alembic history in `alembic_version`; ours is recorded in
`seqtrain_alembic_version` (shared.sweeps.storage, README "Sweeps").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator, TypeEngine

from shared.protocol import JobStatus

# jobs.status holds a JobStatus value; these keep its order (queued first) for listings.
JOB_STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
TERMINAL_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s.terminal)

# BIGINT on PostgreSQL, INTEGER on SQLite (so that it stays the rowid alias).
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Limits an admin sets (null: none). max_priority and max_queued refuse a submission;
    # max_running and max_devices hold the user's further jobs queued (shared.jobs.scheduler).
    max_priority: Mapped[int | None] = mapped_column(Integer)
    max_running: Mapped[int | None] = mapped_column(Integer)
    max_devices: Mapped[int | None] = mapped_column(Integer)
    max_queued: Mapped[int | None] = mapped_column(Integer)
    # Device-seconds of ended attempts, decayed by half every SEQTRAIN_FAIR_SHARE_HALF_LIFE
    # from `usage_at`: the recent usage that fair share compares.
    usage: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    usage_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # sha256 of the whole token: tokens are 256-bit random, so a fast hash is enough.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, shown in listings so a person can tell tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UserSession(Base):
    """One sign-in at /login. The cookie carries a random value whose sha256 is `id_hash`;
    the session ends with its token (revoked), at logout, when an admin ends it, or at
    `expires_at`."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    # The client address at sign-in, shown in listings.
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # tsv | csv | jsonl | text | conll
    format: Mapped[str] = mapped_column(String(16))
    # Parse options given at upload (columns, encoding, tag scheme); with the bytes they fix the rows.
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Artifact key of the raw file: datasets/<sha256>
    uri: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_datasets_owner_name", "owner_id", "name", "id"),
        Index("ix_datasets_owner_sha", "owner_id", "sha256"),
    )


class PretrainedModel(Base):
    """An uploaded pretrained base model: a Hugging Face model directory as an archive,
    validated at upload (shared.hub.archive) and stored once per content hash."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # An admin shares a model with every user (a team's base models).
    shared: Mapped[bool] = mapped_column(default=False)
    # config.json's model_type and architectures, e.g. "bert", ["BertModel"].
    model_type: Mapped[str] = mapped_column(String(64))
    architectures: Mapped[list[str]] = mapped_column(JSON)
    # Exact, from the safetensors headers' shapes.
    parameters: Mapped[int] = mapped_column(BigInteger)
    # The weights' dtype, e.g. F32, BF16; "mixed" when several.
    dtype: Mapped[str] = mapped_column(String(16))
    # hidden_size, num_layers, num_heads, intermediate_size, vocab_size, max_positions, ...
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The files a worker unpacks: [{"path": "config.json", "bytes": 612}, ...]
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # zip | tar.gz
    format: Mapped[str] = mapped_column(String(8))
    # Artifact key of the archive: models/<sha256>
    uri: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    unpacked_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_models_owner_name", "owner_id", "name", "id"),
        Index("ix_models_owner_sha", "owner_id", "sha256"),
        Index("ix_models_shared_name", "shared", "name", "id"),
        # A deleted model's id is never given to another: a job's spec names `model:<id>`.
        {"sqlite_autoincrement": True},
    )


class JobDataset(Base):
    __tablename__ = "job_datasets"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    # train | validation | test
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Null only for jobs created before users existed; those are visible to admins alone.
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL", name="fk_jobs_owner_id_users")
    )
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(32))
    model_type: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    # Incremented by every claim; the fencing token for all of an attempt's writes.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Progress of the running attempt, updated with every metrics flush.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Devices one attempt needs (resources.devices); routes the job to a big-enough worker.
    devices: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The pretrained base model a job fine-tunes (resolved at submit); a model is not
    # deleted while a queued or running job names it.
    base_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL", name="fk_jobs_base_model_id_models"),
        index=True,
    )
    # The submit-time size estimate: parameters and peak training memory per device.
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A client's Idempotency-Key: a retried POST with the same key returns this job.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # The optimizer steps the trainer plans (epochs x steps per epoch, or max_steps), set
    # when an attempt starts; progress and a sweep's epochs trained read it.
    total_steps: Mapped[int | None] = mapped_column(Integer)
    # A sweep trial's next decision point: the trainer evaluates, checkpoints and stops
    # (status paused) at this optimizer step or after this epoch; null: train to the end.
    pause_at_step: Mapped[int | None] = mapped_column(Integer)
    pause_at_epoch: Mapped[int | None] = mapped_column(Integer)
    # Scheduling (shared.jobs.scheduler): resources.priority and resources.nodes; the rank
    # key, submit time (epoch seconds) less priority x SEQTRAIN_PRIORITY_AGING, orders the
    # queue with aging built in; a preempted job keeps it and resumes first in its level.
    priority: Mapped[int] = mapped_column(Integer, default=50, server_default="50")
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    rank_key: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    preemptible: Mapped[bool] = mapped_column(default=True, server_default=true())
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The waiting job the running attempt is asked to make room for (checkpoint, requeue).
    preempt_by: Mapped[int | None] = mapped_column(BigId)
    # When the running attempt was claimed (its usage is charged to the owner at its end).
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the job's id was last put on Redis; the reconciler re-enqueues lost messages.
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_owner_id", "owner_id", "id"),
        Index("ix_jobs_owner_status_id", "owner_id", "status", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # The reconciler's longest-waiting queued jobs, in the order their messages queue up.
        Index("ix_jobs_status_enqueued", "status", "enqueued_at"),
        Index("ux_jobs_owner_idempotency_key", "owner_id", "idempotency_key", unique=True),
        # The claim: each owner's best queued job on a queue, one index probe an owner.
        Index("ix_jobs_claim", "status", "queue", "owner_id", "rank_key", "id"),
        # A priority's longest-waiting job on a queue: its level (queue position's reason).
        Index("ix_jobs_priority_rank", "status", "queue", "priority", "rank_key"),
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float]
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "split", "name", "step"),)


class JobSample(Base):
    """A few sample translations a seq2seq attempt stored after one validation (or the test
    evaluation), fenced like its metrics: `items` is a list of {"source", "reference",
    "hypothesis", "signature"} strings (signature: sacrebleu's, that evaluation's BLEU)."""

    __tablename__ = "job_samples"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    # validation | test
    split: Mapped[str] = mapped_column(String(16))
    items: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_job_samples_job_epoch", "job_id", "epoch", "step"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    # Key inside the artifact store, e.g. jobs/12/checkpoints/step-00000300.safetensors
    uri: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The best by the task's validation metric so far; kept whatever keep_last says.
    is_best: Mapped[bool] = mapped_column(default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Worker(Base):
    """One Celery worker process, registered at start and kept alive by its heartbeat."""

    __tablename__ = "workers"

    # SEQTRAIN_WORKER_NAME, host:pid by default.
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    # Celery queues it consumes.
    queues: Mapped[list[str]] = mapped_column(JSON)
    # cpu | cuda
    device_kind: Mapped[str] = mapped_column(String(16))
    # Devices one job may use on it (GPUs, or CPU processes for gloo DDP).
    device_count: Mapped[int] = mapped_column(Integer)
    # One dict a device: name, memory_bytes (probed outside the Celery process).
    devices: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # up | draining | stopped
    state: Mapped[str] = mapped_column(String(16), default="up")
    current_job_id: Mapped[int | None] = mapped_column(BigId)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_workers_heartbeat", "heartbeat_at"),)


class JobNode(Base):
    """One worker reserved for a multi-node attempt (resources.nodes > 1): node 0 is the
    worker that claimed the job and hosts the rendezvous at address:port; the others took a
    free rank. All rows of an attempt are deleted when it ends."""

    __tablename__ = "job_nodes"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker: Mapped[str] = mapped_column(String(200))
    # The rendezvous endpoint (node 0's row only; the others leave it empty).
    address: Mapped[str | None] = mapped_column(String(200))
    port: Mapped[int | None] = mapped_column(Integer)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # A worker holds at most one rank of an attempt.
    __table_args__ = (Index("ux_job_nodes_worker", "job_id", "attempt", "worker", unique=True),)


# The output and sweep tables live in their own modules (for size); imported here so that
# every user of this module's metadata (Alembic, the tests' truncation) sees them.
from shared.infra.output_tables import JobOutput as JobOutput  # noqa: E402
from shared.infra.output_tables import Report as Report  # noqa: E402
from shared.infra.sweep_tables import Sweep as Sweep  # noqa: E402
from shared.infra.sweep_tables import SweepTrial as SweepTrial  # noqa: E402
