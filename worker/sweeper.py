"""The sweep controller: one pass over the running sweeps, run by the reconciler (one pass
at a time across workers) or by `seqtrain reconcile` alone.

Per sweep, each pass:

1. adopts Optuna trials that were asked for but got no job (the controller died between
   the two): their job is made now, from the parameters Optuna stored;
2. reports every trial's new evaluations of the objective to Optuna (the trial's step is
   the epoch or the optimizer step, as the pruner counts), and tells Optuna how finished
   trials ended (complete with their best value, failed, pruned);
3. decides for each trial paused at a decision point: Optuna's pruner says continue (the
   trial is promoted: requeued to resume from its checkpoint up to the next rung) or stop
   (`asha`: it stays paused, and is promoted later if it ranks in the best
   1/reduction_factor of its rung; the others prune it at once);
4. keeps `max_parallel` trials queued or running: promotions first, then new trials
   (Optuna's sampler, seeded by the sweep's seed and the number of trials so far);
5. finishes the sweep once every trial is done: the paused trials that were never promoted
   are pruned, and the best trial is recorded.

All state is in SQL (our tables and Optuna's), so a restarted controller, a dead worker or
a flushed Redis lose nothing. A trial is created at most once: its job and its
`sweep_trials` row are one transaction keyed by (sweep, trial number), and numbers at or
past `max_trials` are failed in Optuna instead of run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from shared import jobs
from shared.infra.db import Database
from shared.infra.models import Sweep
from shared.infra.queue import JobQueue
from shared.protocol import JobStatus
from shared.settings import Settings
from shared.spec import parse_spec
from shared.sweeps import store
from shared.sweeps.spec import (
    CategoricalParam,
    FloatParam,
    SweepSpec,
    grid_space,
    trial_spec,
)
from shared.sweeps.storage import optuna_storage
from shared.sweeps.store import ACTIVE, TrialView

log = logging.getLogger(__name__)
ACTOR = "sweeper"


def run_sweeps(db: Database, settings: Settings, queue: JobQueue | None) -> list[int]:
    """One pass over every running sweep; returns the job ids of the trials it created."""
    created: list[int] = []
    for sweep in store.running_sweeps(db):
        try:
            created.extend(Controller(db, settings, sweep, queue).advance())
        except Exception:  # one broken sweep must not stop the others
            log.exception("sweep %s: controller pass failed", sweep.id)
    return created


def distributions(sweep: SweepSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for path, param in sweep.parameters.items():
        if isinstance(param, CategoricalParam):
            out[path] = CategoricalDistribution(param.choices)
        elif isinstance(param, FloatParam):
            out[path] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
        else:
            out[path] = IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return out


def make_sampler(sweep: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(sweep), seed=sweep.seed)
    if sweep.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    pruner = sweep.pruner
    if pruner.type in ("asha", "none"):
        # `none` never pauses, so this pruner is never asked.
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_resource, reduction_factor=pruner.reduction_factor
        )
    if pruner.type == "hyperband":
        # Counted in epochs, a trial's budget is known; in steps Optuna infers it from the
        # first trial that completes (until then nothing is pruned).
        epochs = int((sweep.spec.get("training") or {}).get("epochs") or 0)
        top: int | str = epochs if pruner.unit == "epochs" and epochs else "auto"
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_resource,
            max_resource=top,
            reduction_factor=pruner.reduction_factor,
        )
    return optuna.pruners.MedianPruner(
        n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.min_resource - 1
    )


def rungs_after(sweep: SweepSpec, resource: int) -> int | None:
    """The first decision point past `resource`: min_resource * reduction_factor ** k."""
    pruner = sweep.pruner
    if pruner.type == "none":
        return None
    point = pruner.min_resource
    while point <= resource:
        point *= pruner.reduction_factor
    return point


def pause_columns(
    sweep: SweepSpec, epochs: int, point: int | None
) -> tuple[int | None, int | None]:
    """(pause_at_step, pause_at_epoch) of a decision point; (None, None) past the end."""
    if point is None:
        return None, None
    if sweep.pruner.unit == "steps":
        return point, None
    return (None, point) if point < epochs else (None, None)


def rung_of(sweep: SweepSpec, resource: int) -> int:
    """The index k of the rung at `resource` (min_resource * reduction_factor ** k)."""
    pruner = sweep.pruner
    ratio = max(resource, pruner.min_resource) / pruner.min_resource
    return max(0, round(math.log(ratio, pruner.reduction_factor)))


def asha_promotable(
    value: float, competing: list[float], reduction_factor: int, maximize: bool
) -> bool:
    """ASHA's rule for a trial waiting at a rung: promote it when it ranks in the best
    floor(n / reduction_factor) of the n trials that reached the rung."""
    top = len(competing) // reduction_factor
    if top < 1:
        return False
    ranked = sorted(competing, reverse=maximize)
    threshold = ranked[top - 1]
    return value >= threshold if maximize else value <= threshold


class Controller:
    def __init__(
        self, db: Database, settings: Settings, sweep: Sweep, queue: JobQueue | None
    ) -> None:
        self.db, self.settings, self.sweep, self.queue = db, settings, sweep, queue
        self.config = SweepSpec.model_validate(sweep.config)
        self.maximize = self.config.objective.direction == "maximize"
        self.study = optuna.create_study(
            storage=optuna_storage(settings.database_url),
            study_name=sweep.study_name,
            direction=self.config.objective.direction,
            # The search's sampler is set for `ask` alone: a grid sampler's after-trial hook
            # stops an optimize loop, which a tell outside one may not do.
            sampler=optuna.samplers.RandomSampler(seed=self.config.seed),
            pruner=make_pruner(self.config),
            load_if_exists=True,
        )
        self.frozen: dict[int, FrozenTrial] = {}
        self.created: list[int] = []

    # ------------------------------------------------------------------ the pass

    def advance(self) -> list[int]:
        self._refresh()
        rows = {t.number: t for t in store.trials(self.db, self.sweep.id)}
        self._adopt(rows)
        rows = {t.number: t for t in store.trials(self.db, self.sweep.id)}
        for trial in rows.values():
            self._sync(trial)
        self._refresh()
        for trial in rows.values():
            at = self._resource(trial.job_step, trial.job_epoch)
            if trial.status == JobStatus.PAUSED and (not trial.held or at != trial.resource):
                self._decide(trial)
        rows = {t.number: t for t in store.trials(self.db, self.sweep.id)}
        self._fill(rows)
        final = store.trials(self.db, self.sweep.id)
        best = self._best(final)
        if best != (self.sweep.best_trial, self.sweep.best_value) and best is not None:
            store.set_best(self.db, self.sweep.id, best)
        self._finish(final)
        return self.created

    def _refresh(self) -> None:
        self.frozen = {t.number: t for t in self.study.get_trials(deepcopy=False)}

    def _cancelled(self) -> bool:
        return store.get_sweep(self.db, self.sweep.id).cancel_requested

    # ------------------------------------------------------------------ trials

    def _adopt(self, rows: dict[int, TrialView]) -> None:
        """Optuna trials asked for without a row: make their job, or fail them past the
        budget (or once the sweep is cancelled)."""
        for number, frozen in sorted(self.frozen.items()):
            if number in rows or frozen.state != TrialState.RUNNING:
                continue
            if number < self.config.max_trials and not self._cancelled():
                self._create(number, frozen._trial_id, dict(frozen.params))
            else:
                self.study.tell(number, state=TrialState.FAIL)

    def _new_trial(self) -> bool:
        """Ask Optuna for a trial and make its job; False when the budget is spent."""
        neutral = self.study.sampler
        self.study.sampler = make_sampler(self.config, self.config.seed + len(self.frozen))
        try:
            trial = self.study.ask(distributions(self.config))
        finally:
            self.study.sampler = neutral
        self._refresh()
        if trial.number >= self.config.max_trials:
            self.study.tell(trial.number, state=TrialState.FAIL)  # another pass took the slot
            return False
        self._create(trial.number, trial._trial_id, dict(trial.params))
        return True

    def _create(self, number: int, optuna_id: int, params: dict[str, Any]) -> None:
        name = f"{self.sweep.name} trial {number}"
        try:
            spec = parse_spec(trial_spec(self.config.spec, params, name))
        except ValidationError as exc:
            first = exc.errors()[0]
            error = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            store.record_invalid_trial(self.db, self.sweep.id, number, optuna_id, params, error)
            self.study.tell(number, state=TrialState.FAIL)
            return
        point = rungs_after(self.config, 0)
        pause = pause_columns(self.config, spec.training.epochs, point)
        job_id = store.create_trial(
            self.db,
            self.sweep,
            number,
            optuna_id,
            params,
            spec,
            pause,
            self.settings.priority_aging,
        )
        if job_id is None:
            return
        self.created.append(job_id)
        if self.queue is not None:
            try:
                self.queue.enqueue_job(job_id, spec.resources.queue)
            except Exception as exc:  # stays queued in SQL; the reconciler enqueues it
                log.warning(
                    "sweep %s: enqueue of trial job %s failed: %s", self.sweep.id, job_id, exc
                )

    def _resource(self, step: int, epoch: int) -> int:
        return step if self.config.pruner.unit == "steps" else epoch

    def _sync(self, trial: TrialView) -> None:
        """Report the trial's new evaluations; tell Optuna how a finished trial ended."""
        frozen = self.frozen.get(trial.number)
        if frozen is None:
            return
        if trial.job_id is None:
            if frozen.state == TrialState.RUNNING:
                self.study.tell(trial.number, state=TrialState.FAIL)
            return
        evals = store.evaluations(self.db, trial.job_id, self.config.objective.metric)
        if frozen.state == TrialState.RUNNING:
            handle = optuna.trial.Trial(self.study, frozen._trial_id)
            reported = set(frozen.intermediate_values)
            for step, epoch, value in evals:
                resource = self._resource(step, epoch)
                if resource not in reported and math.isfinite(value):
                    handle.report(value, resource)
                    reported.add(resource)
        values = [v for _, _, v in evals if math.isfinite(v)]
        best = (max(values) if self.maximize else min(values)) if values else None
        changes: dict[str, Any] = {"reported": len(evals), "status": trial.status, "value": best}
        if trial.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
            if frozen.state == TrialState.RUNNING:
                if trial.status == JobStatus.SUCCEEDED and best is not None:
                    self.study.tell(trial.number, best)
                else:
                    self.study.tell(trial.number, state=TrialState.FAIL)
        elif trial.status == JobStatus.PRUNED and frozen.state == TrialState.RUNNING:
            self.study.tell(trial.number, state=TrialState.PRUNED)
        if changes != {"reported": trial.reported, "status": trial.status, "value": trial.value}:
            store.update_trial(self.db, self.sweep.id, trial.number, **changes)

    def _decide(self, trial: TrialView) -> None:
        """A trial paused at a new decision point: promote it, hold it (asha) or prune it."""
        frozen = self.frozen.get(trial.number)
        if frozen is None or trial.job_id is None or frozen.state != TrialState.RUNNING:
            return
        resource = self._resource(trial.job_step, trial.job_epoch)
        if self._cancelled():
            jobs.request_cancel(self.db, trial.job_id, ACTOR)
            return
        handle = optuna.trial.Trial(self.study, frozen._trial_id)
        stop = frozen.last_step is not None and handle.should_prune()
        shown = f"at {self.config.pruner.unit} {resource}"
        if not stop:
            self._promote(trial, resource, f"promoted {shown}: the pruner lets it go on")
        elif self.config.pruner.type == "asha":
            store.update_trial(self.db, self.sweep.id, trial.number, held=True, resource=resource)
        else:
            self._prune(trial, f"pruned {shown} by the {self.config.pruner.type} pruner")
        self._refresh()

    def _promote(self, trial: TrialView, resource: int, message: str) -> None:
        assert trial.job_id is not None
        point = rungs_after(self.config, resource)
        step, epoch = pause_columns(self.config, trial.epochs, point)
        if jobs.promote(self.db, trial.job_id, step, epoch, message, ACTOR):
            store.update_trial(
                self.db,
                self.sweep.id,
                trial.number,
                held=False,
                resource=resource,
                status=JobStatus.QUEUED,
            )
            if self.queue is not None:
                try:
                    self.queue.enqueue_job(trial.job_id, self.sweep.queue)
                except Exception as exc:  # stays queued in SQL; the reconciler enqueues it
                    log.warning(
                        "sweep %s: enqueue of job %s failed: %s", self.sweep.id, trial.job_id, exc
                    )

    def _prune(self, trial: TrialView, message: str) -> None:
        assert trial.job_id is not None
        if jobs.prune(self.db, trial.job_id, message, ACTOR):
            store.update_trial(
                self.db, self.sweep.id, trial.number, status=JobStatus.PRUNED, held=False
            )
        frozen = self.frozen.get(trial.number)
        if frozen is not None and frozen.state == TrialState.RUNNING:
            self.study.tell(trial.number, state=TrialState.PRUNED)

    def _promotable(self, trial: TrialView) -> bool:
        frozen = self.frozen.get(trial.number)
        if frozen is None:
            return False
        key = f"completed_rung_{rung_of(self.config, trial.resource)}"
        value = frozen.system_attrs.get(key)
        if value is None:
            return False
        competing = [
            float(t.system_attrs[key]) for t in self.frozen.values() if key in t.system_attrs
        ]
        return asha_promotable(
            float(value), competing, self.config.pruner.reduction_factor, self.maximize
        )

    # ------------------------------------------------------------------ the budget

    def _fill(self, rows: dict[int, TrialView]) -> None:
        if self._cancelled():
            return
        active = sum(1 for t in rows.values() if t.status in ACTIVE)
        held = [t for t in rows.values() if t.held and t.status == JobStatus.PAUSED]
        slots = self.config.max_parallel - active
        while slots > 0:
            promotable = next((t for t in held if self._promotable(t)), None)
            if promotable is not None:
                held.remove(promotable)
                self._promote(
                    promotable,
                    promotable.resource,
                    f"promoted at {self.config.pruner.unit} {promotable.resource}: it ranks in the best 1/{self.config.pruner.reduction_factor} of its rung",
                )
            elif len(self.frozen) < self.config.max_trials:
                if not self._new_trial():
                    break
            else:
                break
            slots -= 1

    def _finish(self, rows: list[TrialView]) -> None:
        cancelled = self._cancelled()
        if not cancelled and len(rows) < self.config.max_trials:
            return
        if any(t.status in ACTIVE for t in rows):
            return
        waiting = [t for t in rows if t.status == JobStatus.PAUSED]
        if any(not t.held for t in waiting) and not cancelled:
            return  # a decision is due next pass
        self._refresh()
        for trial in waiting:
            if cancelled:
                assert trial.job_id is not None
                jobs.request_cancel(self.db, trial.job_id, ACTOR)
            else:
                self._prune(
                    trial,
                    f"pruned at {self.config.pruner.unit} {trial.resource}: never ranked in the best 1/{self.config.pruner.reduction_factor} of its rung",
                )
        rows = store.trials(self.db, self.sweep.id)
        if any(not JobStatus(t.status).terminal for t in rows):
            return
        for trial in rows:
            self._sync(trial)
        best = self._best(store.trials(self.db, self.sweep.id))
        if cancelled:
            status, error = "cancelled", None
        elif best is None:
            status, error = "failed", "no trial succeeded"
        else:
            status, error = "succeeded", None
        store.finish_sweep(self.db, self.sweep.id, status, best, error)

    def _best(self, rows: list[TrialView]) -> tuple[int, float] | None:
        done = [
            (t.number, t.value)
            for t in rows
            if t.status == JobStatus.SUCCEEDED and t.value is not None
        ]
        if not done:
            return None
        pick = max if self.maximize else min
        number, value = pick(done, key=lambda item: item[1])  # type: ignore[arg-type,return-value]
        return number, float(value)  # type: ignore[arg-type]
