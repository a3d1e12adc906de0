"""Response and query models (pydantic): they serialize every response and generate the
OpenAPI document, so the published contract is the code that answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.protocol import JobStatus

MAX_ID = 2**63 - 1


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class FieldError(_Out):
    path: str = Field(
        description="Dotted path of the offending field or parameter; empty for the body."
    )
    message: str
    type: str | None = None


class ErrorDetail(_Out):
    code: str = Field(description="Stable machine-readable code, e.g. validation_error, not_found.")
    message: str
    fields: list[FieldError] = Field(default_factory=list)


class ErrorBody(_Out):
    error: ErrorDetail


class JobCreated(_Out):
    id: int
    status: JobStatus
    enqueued: bool = Field(description="False when Redis was unreachable; the job waits in SQL.")
    url: str


class JobSummary(_Out):
    id: int
    name: str
    owner: str | None
    status: JobStatus
    task: str
    model_type: str
    queue: str
    priority: int = Field(
        description="resources.priority, 0-100: a free worker takes the highest level first; "
        "a waiting job's level is its priority plus one every SEQTRAIN_PRIORITY_AGING seconds.",
    )
    attempt: int
    max_attempts: int
    epoch: int
    step: int
    cancel_requested: bool
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str


class JobEventOut(_Out):
    ts: datetime
    attempt: int
    from_status: JobStatus | None
    to_status: JobStatus | None
    actor: str
    message: str


class MetricValue(_Out):
    value: float
    step: int
    epoch: int


class ProgressOut(_Out):
    fraction: float | None = Field(
        description="Fraction of the planned steps done (0-1); null before it can be told."
    )
    eta_seconds: float | None = Field(description="Seconds left at the current pace (running).")


class JobDetail(JobSummary):
    spec: dict[str, Any]
    progress: ProgressOut = Field(description="The same numbers the jobs board shows.")
    latest_metrics: dict[str, MetricValue] = Field(description='Keyed "<split>/<name>".')
    events: list[JobEventOut]
    devices: int = Field(1, description="Devices per node one attempt trains on.")
    nodes: int = Field(1, description="Workers (nodes) one attempt trains on.")
    preemptions: int = Field(
        0, description="Times the job was checkpointed and requeued to make room for another."
    )
    preempt_by: int | None = Field(
        None,
        description="Running: the waiting job this attempt is asked to make room for (it "
        "checkpoints and goes back to the queue, keeping its place); null otherwise.",
    )
    queue_position: int | None = Field(
        None,
        description="Queued: 1 + the queued jobs on its queue ahead of it in priority order "
        "(priority with aging, then submit order; fair share and backfill may start jobs of "
        "the same level out of this order); null otherwise.",
    )
    wait_reason: str | None = Field(
        None,
        description="Queued: why it has not started, the first that applies: its owner's "
        "quota (`your quota: 2 running (at most 2)`), a multi-node job's missing workers "
        "(`waiting for 2 free workers`), jobs of a higher level ahead (`3 jobs of higher "
        "priority ahead`), no live worker able to hold it (`no live worker on queue 'gpu' has "
        "4 devices`), else `2 jobs ahead` or `next: waiting for a free worker`; null otherwise.",
    )
    estimate: dict[str, Any] | None = Field(
        None,
        description="Submit-time estimate: parameters and peak training bytes per device "
        "(weights, gradients, optimizer, activations, runtime overhead) and the placement.",
    )


class JobList(_Out):
    jobs: list[JobSummary]
    next_cursor: int | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class MetricOut(_Out):
    id: int
    attempt: int
    step: int
    epoch: int
    split: str
    name: str
    value: float
    ts: datetime


class MetricList(_Out):
    metrics: list[MetricOut]
    next_after: int | None = Field(
        description="Pass as `after` for the next page; null at the end."
    )


class CheckpointOut(_Out):
    id: int
    attempt: int
    step: int
    epoch: int
    sha256: str
    bytes: int
    metrics: dict[str, float]
    created_at: datetime
    download_url: str


class CheckpointList(_Out):
    checkpoints: list[CheckpointOut]


class Health(_Out):
    status: Literal["ok", "degraded"]
    database: str
    redis: str


# ---------------------------------------------------------------- query parameters


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListJobsQuery(_Query):
    status: JobStatus | None = Field(None, description="Only jobs in this status.")
    limit: int = Field(50, ge=1, le=500, description="Page size.")
    cursor: int | None = Field(
        None, ge=1, le=MAX_ID, description="`next_cursor` of the previous page."
    )


class MetricsQuery(_Query):
    split: str | None = Field(None, pattern=r"^[a-z_]{1,16}$", description="train or val.")
    name: str | None = Field(None, pattern=r"^[a-z0-9_]{1,64}$", description="e.g. loss, accuracy.")
    after: int | None = Field(
        None, ge=0, le=MAX_ID, description="`next_after` of the previous page."
    )
    limit: int = Field(1000, ge=1, le=10000, description="Page size.")


class DatasetOut(_Out):
    id: int
    name: str
    owner: str | None
    format: str
    options: dict[str, Any] = Field(description="Parse options given at upload.")
    sha256: str
    bytes: int
    rows: int
    stats: dict[str, Any] = Field(
        description="rows, label_counts, tokens_per_row {p50, p95, max, mean}, vocabulary_size; "
        "CoNLL: sentences, tokens, entities per type, tag_counts; pairs (seq2seq): pairs, "
        "source_tokens_per_row, target_tokens_per_row, source_vocabulary_size, "
        "target_vocabulary_size, length_ratio."
    )
    created_at: datetime
    reference: str = Field(description="Use this as data.dataset in a job spec.")
    url: str


class DatasetList(_Out):
    datasets: list[DatasetOut]
    next_cursor: int | None


class ListDatasetsQuery(_Query):
    limit: int = Field(100, ge=1, le=500, description="Page size.")
    cursor: int | None = Field(
        None, ge=1, le=MAX_ID, description="`next_cursor` of the previous page."
    )


class SampleItem(_Out):
    source: str
    reference: str
    hypothesis: str
    signature: str | None = Field(None, description="sacrebleu's BLEU signature that epoch.")


class SampleOut(_Out):
    attempt: int
    epoch: int
    step: int
    split: Literal["validation", "test"]
    items: list[SampleItem]


class SampleList(_Out):
    samples: list[SampleOut] = Field(
        description="seq2seq: sample translations of each evaluation, newest epoch first."
    )


# ---------------------------------------------------------------- status pages

JobSort = Literal["newest", "oldest", "name", "status", "updated"]


class BoardQuery(_Query):
    status: JobStatus | None = Field(None, description="Only jobs in this status.")
    q: str | None = Field(
        None, max_length=200, description="Case-insensitive substring of the job's name."
    )
    sort: JobSort = Field("newest", description="Order of the rows.")
    page: int = Field(1, ge=1, le=1_000_000, description="Page number, from 1.")
    per_page: int = Field(20, ge=1, le=100, description="Rows per page.")


class JobRow(JobSummary):
    progress: float | None = Field(
        description="Fraction of the planned steps done (0-1); null before it can be told."
    )
    eta_seconds: float | None = Field(description="Seconds left at the current pace (running).")
    latest_loss: float | None = Field(description="Newest training loss.")
    metric_name: str | None = Field(description="The task's validation metric, e.g. accuracy.")
    metric_value: float | None
    tokens_per_s: float | None = Field(description="Newest training throughput.")


class JobBoard(_Out):
    jobs: list[JobRow]
    total: int = Field(description="Jobs matching the filters, on every page.")
    page: int
    pages: int


class LogsQuery(_Query):
    attempt: int | None = Field(
        None, ge=1, le=1_000_000, description="Attempt whose log to read; default the latest."
    )
    offset: int = Field(0, ge=0, le=MAX_ID, description="Byte offset to read from.")


class LogChunk(_Out):
    attempt: int = Field(description="The attempt read (0 when the job never started).")
    attempts: list[int] = Field(description="Attempts that have a log.")
    offset: int
    next_offset: int = Field(description="Pass as `offset` to follow the log.")
    text: str = Field(description="At most 64 KiB of the log from `offset` (UTF-8).")
    complete: bool = Field(
        description="The attempt has ended and `next_offset` is the end of its log."
    )


class EventsQuery(_Query):
    after: int | None = Field(
        None, ge=0, le=MAX_ID, description="Only events with a larger id (the last one seen)."
    )


class TimelineEvent(_Out):
    id: int
    ts: datetime
    attempt: int
    from_status: JobStatus | None
    to_status: JobStatus | None
    actor: str
    message: str


class EventList(_Out):
    events: list[TimelineEvent]


class JobProgress(_Out):
    """The `status` event of GET /jobs/<id>/stream."""

    id: int
    status: JobStatus
    attempt: int
    max_attempts: int
    epoch: int
    step: int
    cancel_requested: bool
    error: str | None
    progress: float | None
    eta_seconds: float | None
    preempt_by: int | None = Field(
        None, description="The waiting job a running attempt is asked to make room for."
    )
    updated_at: datetime


class StreamEvent(_Out):
    """One server-sent event of GET /jobs/<id>/stream."""

    event: Literal["status", "metrics", "end"] | None = Field(
        None, description="status: a JobProgress; metrics: a list of metric rows; end."
    )
    data: str | None = Field(None, description="JSON.")
    id: str | None = None
    retry: int | None = Field(None, description="Reconnect delay (ms).")


class HeldJob(_Out):
    """The job a worker holds."""

    id: int
    name: str
    owner: str | None
    priority: int
    nodes: int = Field(description="Workers one attempt of the job trains on.")
    node_rank: int | None = Field(
        description="The node rank this worker holds of a multi-node attempt (0: it claimed "
        "the job and hosts the rendezvous); null for a one-node job."
    )
    since: datetime | None = Field(
        description="When this worker took it: the claim, or its rank's reservation."
    )
    preempt_by: int | None = Field(
        description="The waiting job it is asked to make room for (it checkpoints and requeues)."
    )
    url: str


class WorkerOut(_Out):
    name: str
    hostname: str
    pid: int
    queues: list[str]
    device_kind: str
    device_count: int
    devices: list[dict[str, Any]]
    state: str = Field(description="up, draining or stopped.")
    current_job_id: int | None = Field(
        description="The job it trains; null when idle or when the job is another user's."
    )
    busy: bool = Field(description="It is training a job (yours or not).")
    job: HeldJob | None = Field(
        None,
        description="The job it runs or the multi-node rank it holds, when you may see the "
        "job (an admin sees every one); null when idle or when the job is another user's.",
    )
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_seconds: float


class WorkerList(_Out):
    workers: list[WorkerOut]
    queues: dict[str, int] | None = Field(
        description="Messages waiting per queue; null when Redis does not answer."
    )
