"""The tables of hyperparameter sweeps (shared.sweeps): `sweeps` and `sweep_trials`, part of
the one metadata in shared.infra.models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.infra.models import Base, BigId, UTCDateTime, utcnow
from shared.protocol import JobStatus


class Sweep(Base):
    """A hyperparameter search: the base spec, the parameters' distributions, the objective,
    the sampler and pruner (`shared.sweeps.spec.SweepSpec`, stored whole in `config`).
    Optuna's study (`study_name`, in Optuna's own tables beside these) holds the search's
    state; each trial is an ordinary job (`SweepTrial`). running -> succeeded | failed |
    cancelled."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL", name="fk_sweeps_owner_id_users")
    )
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # role -> the dataset version pinned at submit; every trial trains on the same data.
    datasets: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    base_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL", name="fk_sweeps_base_model_id_models")
    )
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")
    study_name: Mapped[str] = mapped_column(String(200), unique=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    best_trial: Mapped[int | None] = mapped_column(Integer)
    best_value: Mapped[float | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_sweeps_status_id", "status", "id"),
        Index("ix_sweeps_owner_id", "owner_id", "id"),
        {"sqlite_autoincrement": True},
    )


class SweepTrial(Base):
    """Trial `number` of a sweep (Optuna's trial number) and the job that trains it: created
    in the same transaction as the job, and at most once per number. `status` mirrors the
    job's (with pruned); `value` is the objective reported to Optuna (the best of the
    trial's evaluations once it finished); `resource` is where it stands (epochs or steps,
    as the pruner counts)."""

    __tablename__ = "sweep_trials"

    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Null only for a trial whose sampled spec did not validate (status failed, `error`).
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True, index=True
    )
    optuna_trial_id: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    value: Mapped[float | None] = mapped_column()
    # Evaluations reported to Optuna so far (their count), and the last decision point.
    reported: Mapped[int] = mapped_column(Integer, default=0)
    resource: Mapped[int] = mapped_column(Integer, default=0)
    # True once the pruner said stop at the current point (asha: paused, may be promoted).
    held: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
