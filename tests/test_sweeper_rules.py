"""The controller's rules (worker/sweeper.py's pure functions): where trials pause, which
rung a pause is, ASHA's promotion rule, and the Optuna objects a sweep is run with."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from shared.sweeps.spec import SweepSpec
from worker.sweeper import (
    asha_promotable,
    distributions,
    make_pruner,
    make_sampler,
    pause_columns,
    rung_of,
    rungs_after,
)

PARAMETERS: dict[str, Any] = {
    "training.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "model.hidden_size": {"type": "int", "low": 64, "high": 256, "step": 64},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
    "model.pooling": {"type": "categorical", "choices": ["last", "mean"]},
}


def sweep(**fields: Any) -> SweepSpec:
    payload: dict[str, Any] = {
        "name": "rules",
        "spec": {"name": "base", "training": {"epochs": 9}},
        "parameters": PARAMETERS,
        "objective": {"metric": "val/accuracy", "direction": "maximize"},
    }
    payload.update(fields)
    return SweepSpec.model_validate(payload)


def test_rungs_are_min_resource_times_powers_of_the_reduction_factor():
    asha = sweep()  # min_resource 1, reduction_factor 3: rungs 1, 3, 9, 27
    assert [rungs_after(asha, r) for r in (0, 1, 2, 3, 8, 9)] == [1, 3, 3, 9, 9, 27]
    steps = sweep(pruner={"unit": "steps", "min_resource": 100, "reduction_factor": 2})
    assert [rungs_after(steps, r) for r in (0, 99, 100, 250, 400)] == [100, 100, 200, 400, 800]
    assert rungs_after(sweep(pruner={"type": "none"}), 0) is None


def test_pause_columns_pause_before_the_last_epoch_only():
    asha = sweep()
    assert pause_columns(asha, 9, 1) == (None, 1)
    assert pause_columns(asha, 9, 3) == (None, 3)
    assert pause_columns(asha, 9, 9) == (None, None)  # the end: no decision, it finishes
    assert pause_columns(asha, 3, 27) == (None, None)
    assert pause_columns(asha, 9, None) == (None, None)
    steps = sweep(pruner={"unit": "steps", "min_resource": 100})
    assert pause_columns(steps, 3, 300) == (300, None)
    assert pause_columns(steps, 3, None) == (None, None)


def test_rung_of_is_the_index_of_the_decision_point():
    asha = sweep()
    assert [rung_of(asha, r) for r in (0, 1, 3, 9, 27)] == [0, 0, 1, 2, 3]
    halving = sweep(pruner={"min_resource": 2, "reduction_factor": 2})
    assert [rung_of(halving, r) for r in (2, 4, 8, 16)] == [0, 1, 2, 3]


def test_asha_promotes_the_best_third_of_nine():
    values = [0.50, 0.81, 0.62, 0.77, 0.70, 0.55, 0.90, 0.66, 0.59]
    # maximize: the best 3 are 0.90, 0.81, 0.77
    promoted = [v for v in values if asha_promotable(v, values, 3, maximize=True)]
    assert sorted(promoted) == [0.77, 0.81, 0.90]
    assert not asha_promotable(0.70, values, 3, maximize=True)  # the 4th
    # minimize (a loss): the best 3 are the lowest
    promoted = [v for v in values if asha_promotable(v, values, 3, maximize=False)]
    assert sorted(promoted) == [0.50, 0.55, 0.59]
    assert not asha_promotable(0.62, values, 3, maximize=False)


def test_asha_promotes_nothing_until_a_rung_has_reduction_factor_trials():
    assert not asha_promotable(0.9, [0.9, 0.1], 3, maximize=True)
    assert not asha_promotable(0.9, [0.9], 2, maximize=True)
    # exactly three: the best one only
    assert asha_promotable(0.9, [0.9, 0.5, 0.1], 3, maximize=True)
    assert not asha_promotable(0.5, [0.9, 0.5, 0.1], 3, maximize=True)
    # six at reduction 2: three promotable; a tie at the threshold is promoted
    six = [0.1, 0.2, 0.3, 0.3, 0.5, 0.6]
    assert [asha_promotable(v, six, 2, True) for v in six] == [False, False, True, True, True, True]


def test_distributions_follow_the_parameters():
    made = distributions(sweep())
    assert made["training.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert made["model.hidden_size"] == IntDistribution(64, 256, step=64)
    assert made["model.dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert made["model.pooling"] == CategoricalDistribution(["last", "mean"])


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("grid", optuna.samplers.GridSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
    ],
)
def test_make_sampler_types(name, kind):
    stepped = dict(
        PARAMETERS, **{"training.lr": {"type": "float", "low": 1e-3, "high": 3e-3, "step": 1e-3}}
    )
    assert type(make_sampler(sweep(sampler=name, parameters=stepped), 7)) is kind


def test_a_seeded_sampler_asks_the_same_parameters():
    config = sweep(sampler="random")
    asked = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(config, 11))
        asked.append(study.ask(distributions(config)).params)
    assert asked[0] == asked[1]
    other = optuna.create_study(sampler=make_sampler(config, 12))
    assert other.ask(distributions(config)).params != asked[0]


def test_the_grid_sampler_walks_every_point():
    config = sweep(
        sampler="grid",
        parameters={
            "model.hidden_size": {"type": "int", "low": 64, "high": 128, "step": 64},
            "model.pooling": {"type": "categorical", "choices": ["last", "mean"]},
        },
    )
    study = optuna.create_study(sampler=make_sampler(config, 0))
    seen = {tuple(sorted(study.ask(distributions(config)).params.items())) for _ in range(4)}
    assert len(seen) == 4


@pytest.mark.parametrize(
    ("pruner", "kind"),
    [
        ({"type": "asha"}, optuna.pruners.SuccessiveHalvingPruner),
        ({"type": "none"}, optuna.pruners.SuccessiveHalvingPruner),
        ({"type": "hyperband"}, optuna.pruners.HyperbandPruner),
        ({"type": "median", "startup_trials": 2}, optuna.pruners.MedianPruner),
    ],
)
def test_make_pruner_types(pruner, kind):
    assert type(make_pruner(sweep(pruner=pruner))) is kind


def test_the_asha_pruner_keeps_the_top_of_a_rung():
    """Optuna's successive halving with the sweep's settings: at rung 0 (epoch 1) a trial is
    stopped unless it ranks in the best third of the trials that reached the rung."""
    config = sweep(pruner={"type": "asha", "min_resource": 1, "reduction_factor": 3})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(config))
    decisions = []
    for value in (0.5, 0.9, 0.6, 0.55, 0.95, 0.4):
        trial = study.ask()
        trial.report(value, 1)
        decisions.append(trial.should_prune())
        if decisions[-1]:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    # Optuna goes on with the best of a rung with fewer than 3 (the first, then 0.9), the
    # best 1 of 3..5 (0.95) and the best 2 of 6 (0.4 is not); the controller holds the
    # stopped ones and promotes them later by asha_promotable.
    assert decisions == [False, False, True, True, False, True]
