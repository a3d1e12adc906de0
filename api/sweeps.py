"""/api/v1/sweeps: hyperparameter sweeps. Submit (a SweepSpec: the base job spec, the
parameters' distributions, the objective, the budget, the sampler and the pruner), list,
detail with every trial, cancel. The controller in the workers' reconcilers runs them;
each trial is an ordinary job (its detail names the sweep)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from flask import Blueprint, Response, request, url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from api import services
from api.auth import current_principal, require_principal
from api.basemodels import pin_base_model
from api.errors import ApiError, validation_fields
from api.http import json_body, query, reply
from api.openapi import API_PREFIX, id_rule, operation
from api.schemas import _Out
from api.submissions import check_limits, resolve_datasets
from shared import jobs
from shared.infra.models import Job, Sweep, User
from shared.jobs.routing import PlacementError, check_placement
from shared.limits import Limits, over_limits
from shared.protocol import JobStatus
from shared.spec import JobSpec
from shared.sweeps import store
from shared.sweeps.spec import (
    Objective,
    PrunerSpec,
    SweepError,
    SweepSpec,
    resource_corners,
    validate_sweep,
)

bp = Blueprint("sweeps", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
SWEEP = "/sweeps/" + id_rule("sweep_id")
# Every status a trial can be in, each counted (0 when none is).
TRIAL_STATUSES = tuple(status.value for status in JobStatus)


class ListSweepsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["running", "succeeded", "failed", "cancelled"] | None = Field(
        None, description="Only sweeps in this status."
    )
    limit: int = Field(50, ge=1, le=200, description="How many, newest first.")


class BestTrial(_Out):
    number: int
    job_id: int | None
    value: float | None
    params: dict[str, Any]


class TrialOut(_Out):
    number: int
    job_id: int | None = Field(description="Null for a trial whose sampled spec was invalid.")
    status: str = Field(description="The job's: queued, running, paused, succeeded, ...")
    params: dict[str, Any] = Field(description="The sampled value of each parameter path.")
    value: float | None = Field(description="The objective reported for the trial.")
    epochs_trained: float = Field(description="step * epochs / total_steps of its job.")
    epochs: int = Field(description="The trial's planned epochs.")
    step: int
    held: bool = Field(description="The pruner stopped it at its current decision point.")
    error: str | None
    url: str | None = Field(description="The job's status page.")


class SweepOut(_Out):
    id: int
    name: str
    status: Literal["running", "succeeded", "failed", "cancelled"]
    owner: str | None
    objective: Objective
    sampler: str
    pruner: PrunerSpec
    max_trials: int
    max_parallel: int
    seed: int
    parameters: dict[str, dict[str, Any]] = Field(
        description="Dotted job-spec path -> its distribution (float, int or categorical)."
    )
    cancel_requested: bool
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="Trials by status (every status, 0 for none).")
    epochs_trained: float = Field(description="Epochs trained, summed over the trials.")
    best_trial: BestTrial | None


class SweepDetail(SweepOut):
    spec: dict[str, Any] = Field(description="The base job spec, defaults filled.")
    trials: list[TrialOut]


class SweepList(_Out):
    sweeps: list[SweepOut]


# ---------------------------------------------------------------- the figures of a sweep


@dataclass(frozen=True)
class Figures:
    counts: dict[str, int]
    epochs_trained: float
    best_trial: dict[str, Any] | None
    trial_epochs: dict[int, float]  # trial number -> its epochs trained


def epochs_trained(step: int, epochs: int, total_steps: int | None) -> float:
    """How many epochs a trial's job has trained: 0 until the trainer planned its steps."""
    return step * epochs / total_steps if total_steps else 0.0


def figures(
    trials: Sequence[store.TrialView],
    total_steps: Mapping[int, int | None],
    best_number: int | None,
    best_value: float | None = None,
) -> Figures:
    """Trials by status, epochs trained (per trial and summed), and the best trial (the
    sweep's `best_trial` number looked up among `trials`; its value the sweep's when set)."""
    counts = dict.fromkeys(TRIAL_STATUSES, 0)
    per_trial: dict[int, float] = {}
    best = None
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
        steps = total_steps.get(trial.job_id) if trial.job_id is not None else None
        per_trial[trial.number] = epochs_trained(trial.job_step, trial.epochs, steps)
        if trial.number == best_number:
            best = {
                "number": trial.number,
                "job_id": trial.job_id,
                "value": best_value if best_value is not None else trial.value,
                "params": trial.params,
            }
    return Figures(counts, sum(per_trial.values()), best, per_trial)


def planned_steps(job_ids: Iterable[int | None]) -> dict[int, int | None]:
    """job id -> the optimizer steps its trainer plans (None before it started)."""
    ids = sorted({job_id for job_id in job_ids if job_id is not None})
    if not ids:
        return {}
    with services().db.session() as session:
        rows = session.execute(select(Job.id, Job.total_steps).where(Job.id.in_(ids)))
        return {int(job_id): steps for job_id, steps in rows}


def owner_names(owner_ids: Iterable[int | None]) -> dict[int, str]:
    ids = sorted({owner for owner in owner_ids if owner is not None})
    if not ids:
        return {}
    with services().db.session() as session:
        return {
            int(uid): name
            for uid, name in session.execute(select(User.id, User.name).where(User.id.in_(ids)))
        }


def summary(
    sweep: Sweep,
    trials: Sequence[store.TrialView],
    steps: Mapping[int, int | None],
    owner: str | None,
) -> tuple[dict[str, Any], Figures]:
    config = sweep.config
    found = figures(trials, steps, sweep.best_trial, sweep.best_value)
    fields = {
        "id": sweep.id,
        "name": sweep.name,
        "status": sweep.status,
        "owner": owner,
        **{key: config[key] for key in ("objective", "sampler", "pruner", "parameters")},
        **{key: config[key] for key in ("max_trials", "max_parallel", "seed")},
        "cancel_requested": sweep.cancel_requested,
        "error": sweep.error,
        "created_at": sweep.created_at,
        "finished_at": sweep.finished_at,
        "counts": found.counts,
        "epochs_trained": found.epochs_trained,
        "best_trial": found.best_trial,
    }
    return fields, found


def detail(sweep: Sweep) -> SweepDetail:
    trials = store.trials(services().db, sweep.id)
    steps = planned_steps(t.job_id for t in trials)
    owner = owner_names([sweep.owner_id]).get(sweep.owner_id or 0)
    fields, found = summary(sweep, trials, steps, owner)
    pages = request.script_root
    items = [
        {
            "number": t.number,
            "job_id": t.job_id,
            "status": t.status,
            "params": t.params,
            "value": t.value,
            "epochs_trained": found.trial_epochs[t.number],
            "epochs": t.epochs,
            "step": t.job_step,
            "held": t.held,
            "error": t.error,
            "url": f"{pages}/jobs/{t.job_id}" if t.job_id is not None else None,
        }
        for t in trials
    ]
    return SweepDetail.model_validate({**fields, "spec": sweep.config["spec"], "trials": items})


# ---------------------------------------------------------------- submit


def validated(payload: dict[str, Any]) -> tuple[SweepSpec, JobSpec]:
    """The sweep and its base spec, or a 422 naming each failing field."""
    try:
        return validate_sweep(payload)
    except ValidationError as exc:
        fields = validation_fields(exc)
        paths = ", ".join(f["path"] or "(body)" for f in fields)
        raise ApiError(422, "validation_error", f"invalid sweep: {paths}", fields) from None
    except SweepError as exc:
        fields = [{"path": exc.path, "message": exc.message, "type": "sweep"}]
        raise ApiError(422, "validation_error", f"invalid sweep: {exc.path}", fields) from None


def spec_field(field: str) -> str:
    """A job-spec field as the sweep request names it (under `spec`)."""
    return field if field.startswith("spec.") or not field else f"spec.{field}"


def prefixed(error: ApiError) -> ApiError:
    """A job submit's 422 (fields of the job spec) as the sweep's: each path under `spec`."""
    fields = [{**f, "path": spec_field(f.get("path", ""))} for f in error.fields]
    paths = ", ".join(f["path"] for f in fields)
    return ApiError(error.status, error.code, f"invalid sweep: {paths}", fields)


def placed(base: JobSpec, facts: Mapping[str, Any] | None) -> None:
    """A 422 naming the field when no registered worker could hold a trial of the base
    spec (as a job submit checks it)."""
    svc = services()
    try:
        check_placement(svc.db, base, svc.settings, facts)
    except PlacementError as exc:
        path = spec_field(exc.field)
        fields = [{"path": path, "message": exc.message, "type": "placement"}]
        raise ApiError(422, "validation_error", f"invalid sweep: {path}", fields) from None


def check_trial_limits(sweep: SweepSpec, base: JobSpec, allowed: Limits) -> None:
    """A 422 naming each parameter whose values would take a trial past the caller's
    limits (a search space over `resources.priority`, `devices`, `nodes` or
    `preemptible`): each trial is held to them as a job is."""
    admin = current_principal().is_admin
    fields: dict[str, dict[str, str]] = {}
    for params, spec in resource_corners(sweep, base):
        for field, why in over_limits(spec.resources, allowed, admin):
            path = "parameters." + (field if field in params else next(iter(params)))
            shown = ", ".join(f"{p} = {v!r}" for p, v in params.items())
            fields.setdefault(
                path, {"path": path, "message": f"{why} (at {shown})", "type": "limit"}
            )
    if fields:
        paths = ", ".join(fields)
        raise ApiError(422, "validation_error", f"invalid sweep: {paths}", list(fields.values()))


@operation(
    bp,
    "POST",
    "/sweeps",
    summary="Start a hyperparameter sweep",
    body=SweepSpec,
    responses={201: SweepDetail},
    errors=(400, 413, 415, 422),
    tag="sweeps",
)
def submit() -> Response:
    """Validates the whole sweep (every parameter path is a job-spec field whose own bounds
    hold the distribution; the objective is a metric the task reports; the spec at each
    parameter's extremes and every choice is valid, and holds the caller's limits, each
    `resources` parameter at its corners too), pins the base spec's datasets and base
    model for the caller, and stores the sweep (`running`). Trials start within seconds,
    at most `max_parallel` at a time. A 422 names the failing field."""
    sweep, base = validated(json_body())
    principal = current_principal()
    try:
        allowed = check_limits(base)  # the caller's priority, devices and preemptible limits
        base, model = pin_base_model(base)
        links = resolve_datasets(base)
    except ApiError as exc:
        raise prefixed(exc) from None
    check_trial_limits(sweep, base, allowed)
    placed(base, None if model is None else {"parameters": model.parameters, **model.summary})
    row = store.create_sweep(
        services().db,
        sweep,
        base,
        principal.user_id,
        links,
        model.id if model is not None else None,
    )
    location = url_for("sweeps.show", sweep_id=row.id)
    return reply(detail(row), 201, {"Location": location})


# ---------------------------------------------------------------- read, cancel


def owned_sweep(sweep_id: int) -> Sweep:
    """The sweep, when the caller may see it: another user's answers as one that does not
    exist."""
    try:
        sweep = store.get_sweep(services().db, sweep_id)
    except store.SweepNotFound:
        sweep = None
    if sweep is None or not current_principal().may_see(sweep.owner_id):
        raise ApiError(404, "not_found", f"sweep {sweep_id} not found")
    return sweep


@operation(
    bp,
    "GET",
    "/sweeps",
    summary="List sweeps, newest first",
    query=ListSweepsQuery,
    responses={200: SweepList},
    errors=(400,),
    tag="sweeps",
)
def index() -> Response:
    """Your sweeps (an admin sees everyone's), each with its trials' counts, the epochs
    trained and the best trial so far."""
    params = query(ListSweepsQuery)
    principal = current_principal()
    db = services().db
    owner = None if principal.is_admin else principal.user_id
    rows = store.list_sweeps(db, owner_id=owner, limit=params.limit, status=params.status)
    trials = {row.id: store.trials(db, row.id) for row in rows}
    steps = planned_steps(t.job_id for each in trials.values() for t in each)
    names = owner_names(row.owner_id for row in rows)
    items = [
        SweepOut.model_validate(
            summary(row, trials[row.id], steps, names.get(row.owner_id or 0))[0]
        )
        for row in rows
    ]
    return reply(SweepList(sweeps=items))


@operation(
    bp,
    "GET",
    SWEEP,
    summary="One sweep: its settings, every trial, the best so far",
    responses={200: SweepDetail},
    errors=(404,),
    tag="sweeps",
)
def show(sweep_id: int) -> Response:
    return reply(detail(owned_sweep(sweep_id)))


@operation(
    bp,
    "POST",
    SWEEP + "/cancel",
    summary="Cancel a running sweep and its unfinished trials",
    responses={202: SweepDetail},
    errors=(404, 409),
    tag="sweeps",
)
def cancel(sweep_id: int) -> Response:
    """No new trial starts; queued and paused trials are cancelled at once, running ones
    stop within seconds; the sweep ends `cancelled` at the controller's next pass. A
    finished sweep is a 409."""
    sweep = owned_sweep(sweep_id)
    db = services().db
    if sweep.status != "running":
        raise ApiError(409, "conflict", f"sweep {sweep_id} is already {sweep.status}")
    actor = current_principal().name
    for job_id in store.request_cancel(db, sweep_id):
        try:
            jobs.request_cancel(db, job_id, actor)
        except (jobs.InvalidTransition, jobs.JobNotFound):
            continue  # it finished (or went) since: nothing left to cancel
    return reply(detail(owned_sweep(sweep_id)), 202)
