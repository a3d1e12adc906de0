"""The tables of a trained job's results: `reports` (its evaluation report) and
`job_outputs` (batch predictions, exports), part of the one metadata in shared.infra.models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.infra.models import Base, BigId, UTCDateTime, utcnow
from shared.protocol import JobStatus


class Report(Base):
    """A finished job's evaluation report on its best checkpoint (the task's own JSON,
    `shared.jobs.reports`), written by the attempt that finished it, fenced like its other
    writes."""

    __tablename__ = "reports"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    checkpoint_id: Mapped[int | None] = mapped_column(BigId)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobOutput(Base):
    """Work a worker does on a trained job's best checkpoint, through the queue: `kind`
    predictions (a dataset in, a JSONL or CSV file of predictions out) or export (a bundle).
    Its own small state machine: queued -> running (attempt + 1, lease) -> succeeded |
    failed | cancelled, and running -> queued when its worker is lost."""

    __tablename__ = "job_outputs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL", name="fk_job_outputs_owner_id_users")
    )
    kind: Mapped[str] = mapped_column(String(16))
    # What was asked: the dataset, the file format, export options.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL", name="fk_job_outputs_dataset_id_datasets")
    )
    checkpoint_id: Mapped[int | None] = mapped_column(BigId)
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rows_total: Mapped[int | None] = mapped_column(Integer)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    # The result file in the artifact store.
    uri: Mapped[str | None] = mapped_column(String(500))
    filename: Mapped[str | None] = mapped_column(String(200))
    content_type: Mapped[str | None] = mapped_column(String(100))
    sha256: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    # What the worker found worth saying: rows per second, ONNX parity, a summary.
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_job_outputs_status_lease", "status", "lease_expires_at"),
        Index("ix_job_outputs_owner_id", "owner_id", "id"),
        {"sqlite_autoincrement": True},  # an id, and its download link, is never reused
    )
