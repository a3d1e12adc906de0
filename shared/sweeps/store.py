"""Sweeps and their trials in SQL: create, read, list, cancel, and the one transaction that
makes a trial's job and its `sweep_trials` row together (at most once per trial number).
Optuna-free: the API reads sweeps from here alone; the controller (worker.sweeper) writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from shared.infra.db import Database, affected_rows
from shared.infra.models import Job, JobDataset, Metric, Sweep, SweepTrial, utcnow
from shared.jobs.events import add_event
from shared.jobs.ranking import DEFAULT_AGING
from shared.jobs.submission import NewJob, job_values
from shared.protocol import JobStatus
from shared.spec import JobSpec
from shared.sweeps.spec import SweepSpec

SWEEP_STATUSES = ("running", "succeeded", "failed", "cancelled")
# Trial statuses that still take (or are about to take) a worker.
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


class SweepNotFound(LookupError):
    def __init__(self, sweep_id: int) -> None:
        super().__init__(f"sweep {sweep_id} not found")
        self.sweep_id = sweep_id


def study_name(sweep_id: int) -> str:
    return f"seqtrain-sweep-{sweep_id}"


def create_sweep(
    db: Database,
    sweep: SweepSpec,
    base: JobSpec,
    owner_id: int | None,
    datasets: dict[str, int],
    base_model_id: int | None,
) -> Sweep:
    """Insert a running sweep (its study is created by the controller's first pass)."""
    config = sweep.model_dump(mode="json")
    config["spec"] = base.model_dump(mode="json")  # defaults filled: what every trial starts from
    with db.session() as session:
        row = Sweep(
            owner_id=owner_id,
            name=sweep.name,
            config=config,
            datasets=datasets,
            base_model_id=base_model_id,
            queue=base.resources.queue,
            status="running",
            study_name=f"pending-{utcnow().timestamp()}-{id(config)}",
        )
        session.add(row)
        session.flush()
        row.study_name = study_name(row.id)
        session.flush()
        session.expunge(row)
        return row


def get_sweep(db: Database, sweep_id: int) -> Sweep:
    with db.session() as session:
        row = session.get(Sweep, sweep_id)
        if row is None:
            raise SweepNotFound(sweep_id)
        session.expunge(row)
        return row


def list_sweeps(
    db: Database, owner_id: int | None = None, limit: int = 100, status: str | None = None
) -> list[Sweep]:
    """Newest first; `owner_id` None lists everyone's (admins)."""
    query = select(Sweep).order_by(Sweep.id.desc()).limit(limit)
    if owner_id is not None:
        query = query.where(Sweep.owner_id == owner_id)
    if status is not None:
        query = query.where(Sweep.status == status)
    with db.session() as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def running_sweeps(db: Database) -> list[Sweep]:
    with db.session() as session:
        rows = list(
            session.scalars(select(Sweep).where(Sweep.status == "running").order_by(Sweep.id))
        )
        session.expunge_all()
        return rows


@dataclass(frozen=True)
class TrialView:
    """A trial row with what its job says now."""

    number: int
    job_id: int | None
    optuna_trial_id: int
    params: dict[str, Any]
    status: str  # the job's status (pruned included); failed for a spec that never ran
    value: float | None
    reported: int
    resource: int
    held: bool
    error: str | None
    job_step: int
    job_epoch: int
    epochs: int  # the trial's planned epochs


def trials(db: Database, sweep_id: int) -> list[TrialView]:
    """Every trial of the sweep with its job's status and progress, by number."""
    query = (
        select(SweepTrial, Job.status, Job.step, Job.epoch, Job.spec, Job.error)
        .outerjoin(Job, Job.id == SweepTrial.job_id)
        .where(SweepTrial.sweep_id == sweep_id)
        .order_by(SweepTrial.number)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    out = []
    for trial, status, step, epoch, spec, error in rows:
        out.append(
            TrialView(
                trial.number,
                trial.job_id,
                trial.optuna_trial_id,
                trial.params,
                status or trial.status,
                trial.value,
                trial.reported,
                trial.resource,
                trial.held,
                trial.error or (error if status in (JobStatus.FAILED,) else None),
                step or 0,
                epoch or 0,
                int(((spec or {}).get("training") or {}).get("epochs") or 0),
            )
        )
    return out


def create_trial(
    db: Database,
    sweep: Sweep,
    number: int,
    optuna_trial_id: int,
    params: dict[str, Any],
    spec: JobSpec,
    pause_at: tuple[int | None, int | None],
    aging: float = DEFAULT_AGING,
) -> int | None:
    """The trial's queued job (owned by the sweep's owner, on its pinned datasets and base
    model, paused at `pause_at` = (step, epoch)) and its row, in one transaction. None when
    the number already has a row: a trial is never created twice."""
    new = NewJob(
        spec,
        sweep.owner_id,
        "sweep",
        sweep.datasets,
        message=f"trial {number} of sweep {sweep.id} ({sweep.name})",
        base_model_id=sweep.base_model_id,
        aging=aging,
    )
    values = job_values(new, utcnow())
    values["pause_at_step"], values["pause_at_epoch"] = pause_at
    try:
        with db.session() as session:
            if session.get(SweepTrial, (sweep.id, number)) is not None:
                return None
            job = Job(**values)
            session.add(job)
            session.flush()
            session.add_all(
                JobDataset(job_id=job.id, role=role, dataset_id=dataset_id)
                for role, dataset_id in new.datasets.items()
            )
            add_event(session, job.id, 0, None, JobStatus.QUEUED, "sweep", new.message)
            session.add(
                SweepTrial(
                    sweep_id=sweep.id,
                    number=number,
                    job_id=job.id,
                    optuna_trial_id=optuna_trial_id,
                    params=params,
                    status=JobStatus.QUEUED,
                )
            )
            return job.id
    except IntegrityError:
        return None  # another controller made this number's trial first


def record_invalid_trial(
    db: Database,
    sweep_id: int,
    number: int,
    optuna_trial_id: int,
    params: dict[str, Any],
    error: str,
) -> bool:
    """A trial whose sampled spec does not validate: a row without a job, failed."""
    try:
        with db.session() as session:
            if session.get(SweepTrial, (sweep_id, number)) is not None:
                return False
            session.add(
                SweepTrial(
                    sweep_id=sweep_id,
                    number=number,
                    job_id=None,
                    optuna_trial_id=optuna_trial_id,
                    params=params,
                    status=JobStatus.FAILED,
                    error=error,
                )
            )
            return True
    except IntegrityError:
        return False


def update_trial(db: Database, sweep_id: int, number: int, **values: Any) -> None:
    with db.session() as session:
        session.execute(
            update(SweepTrial)
            .where(SweepTrial.sweep_id == sweep_id, SweepTrial.number == number)
            .values(updated_at=utcnow(), **values)
        )


def evaluations(db: Database, job_id: int, metric: str) -> list[tuple[int, int, float]]:
    """(step, epoch, value) of each evaluation of `metric` ("val/accuracy") by the job, in
    step order; a step written by several attempts counts once, with the latest value."""
    split, _, name = metric.partition("/")
    query = (
        select(Metric.step, Metric.epoch, Metric.value, Metric.attempt)
        .where(Metric.job_id == job_id, Metric.split == split, Metric.name == name)
        .order_by(Metric.step, Metric.attempt)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    latest: dict[int, tuple[int, int, float]] = {}
    for step, epoch, value, _attempt in rows:
        latest[step] = (step, epoch, float(value))
    return [latest[step] for step in sorted(latest)]


def finish_sweep(
    db: Database, sweep_id: int, status: str, best: tuple[int, float] | None, error: str | None
) -> bool:
    """running -> succeeded | failed | cancelled, with the best trial."""
    with db.session() as session:
        return bool(
            affected_rows(
                session.execute(
                    update(Sweep)
                    .where(Sweep.id == sweep_id, Sweep.status == "running")
                    .values(
                        status=status,
                        finished_at=utcnow(),
                        best_trial=best[0] if best else None,
                        best_value=best[1] if best else None,
                        error=error,
                    )
                )
            )
        )


def set_best(db: Database, sweep_id: int, best: tuple[int, float] | None) -> None:
    with db.session() as session:
        session.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id)
            .values(best_trial=best[0] if best else None, best_value=best[1] if best else None)
        )


def request_cancel(db: Database, sweep_id: int) -> list[int]:
    """Flag the sweep (no new trials) and return the job ids of its unfinished trials, for
    the caller to cancel. A finished sweep is left as it is."""
    with db.session() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            raise SweepNotFound(sweep_id)
        if sweep.status != "running":
            return []
        session.execute(update(Sweep).where(Sweep.id == sweep_id).values(cancel_requested=True))
        return list(
            session.scalars(
                select(SweepTrial.job_id)
                .join(Job, Job.id == SweepTrial.job_id)
                .where(
                    SweepTrial.sweep_id == sweep_id,
                    Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)),
                )
            )
        )


def trial_of_job(db: Database, job_id: int) -> tuple[int, int] | None:
    """(sweep id, trial number) of a job that is a sweep's trial."""
    with db.session() as session:
        row = session.execute(
            select(SweepTrial.sweep_id, SweepTrial.number).where(SweepTrial.job_id == job_id)
        ).first()
    return (int(row[0]), int(row[1])) if row else None


def trial_counts(
    db: Database, finished_since: datetime | None = None
) -> dict[tuple[int, str], int]:
    """(sweep id, status) -> how many of its trials have that status (pruned included).
    With `finished_since`, only running sweeps and those that finished since then."""
    query = (
        select(SweepTrial.sweep_id, func.coalesce(Job.status, SweepTrial.status), func.count())
        .outerjoin(Job, Job.id == SweepTrial.job_id)
        .join(Sweep, Sweep.id == SweepTrial.sweep_id)
        .group_by(SweepTrial.sweep_id, func.coalesce(Job.status, SweepTrial.status))
    )
    if finished_since is not None:
        query = query.where(or_(Sweep.status == "running", Sweep.finished_at >= finished_since))
    with db.session() as session:
        return {(int(s), str(st)): int(n) for s, st, n in session.execute(query)}
