"""The sweep request's validation (shared.sweeps.spec): pure, no database. A request that
cannot run is refused at submit with the field that is wrong (`SweepError.path`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.spec import JobSpec
from shared.sweeps.spec import (
    SweepError,
    SweepSpec,
    corners,
    grid_space,
    set_path,
    trial_spec,
    validate_sweep,
)

BASE: dict[str, Any] = {
    "name": "sst2-lstm",
    "task": "classification",
    "data": {
        "dataset": "sst2-train",
        "validation_dataset": "sst2-dev",
        "tokenizer": {"kind": "word", "vocab_size": 16000},
    },
    "model": {"type": "lstm", "embedding_dim": 128, "hidden_size": 128},
    "training": {"epochs": 3, "batch_size": 64, "lr": 0.002},
}
GOOD: dict[str, Any] = {
    "training.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "model.hidden_size": {"type": "int", "low": 64, "high": 256, "step": 64},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "model.pooling": {"type": "categorical", "choices": ["last", "mean", "attention"]},
}


def request(parameters: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "sst2-lstm sweep",
        "spec": copy.deepcopy(BASE),
        "parameters": GOOD if parameters is None else parameters,
        "objective": {"metric": "val/accuracy", "direction": "maximize"},
    }
    payload.update(fields)
    return payload


def refused(payload: dict[str, Any]) -> SweepError:
    with pytest.raises(SweepError) as caught:
        validate_sweep(payload)
    return caught.value


def test_a_good_sweep_is_accepted_with_the_defaults():
    sweep, base = validate_sweep(request())
    assert isinstance(sweep, SweepSpec) and isinstance(base, JobSpec)
    assert base.model.type == "lstm" and base.training.epochs == 3
    assert (sweep.max_trials, sweep.max_parallel, sweep.sampler, sweep.seed) == (16, 2, "tpe", 0)
    pruner = sweep.pruner
    assert (pruner.type, pruner.unit, pruner.min_resource, pruner.reduction_factor) == (
        "asha",
        "epochs",
        1,
        3,
    )
    assert sweep.parameters["training.lr"].log is True
    assert sweep.parameters["model.pooling"].choices == ["last", "mean", "attention"]


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("model.hiden_size", "model.hiden_size is not a job spec field"),
        ("modle.hidden_size", "modle is not a job spec field"),
        ("training", "training is a section, not a value"),
        ("data.tokenizer", "data.tokenizer is a section, not a value"),
        ("training.lr.peak", "training.lr is a value, not a section"),
    ],
)
def test_a_path_that_is_not_a_value_of_the_spec_is_refused(path, said):
    error = refused(request({path: {"type": "int", "low": 1, "high": 2}}))
    assert error.path == f"parameters.{path}"
    assert said in error.message


@pytest.mark.parametrize(
    ("path", "low", "high"),
    [
        ("training.lr", 0.0, 0.01),  # gt 0: 0 itself is refused
        ("training.lr", -0.1, 0.01),
        ("training.lr", 0.001, 10.5),  # le 10
        ("model.dropout", -0.1, 0.5),  # ge 0
        ("model.dropout", 0.1, 1.0),  # lt 1: 1 itself is refused
        ("training.weight_decay", 0.0, 1.5),  # le 1
    ],
)
def test_bounds_outside_the_fields_own_are_refused(path, low, high):
    error = refused(request({path: {"type": "float", "low": low, "high": high}}))
    assert error.path == f"parameters.{path}"
    assert "own bounds" in error.message


def test_bounds_at_an_inclusive_limit_are_accepted():
    validate_sweep(request({"training.lr": {"type": "float", "low": 1e-5, "high": 10.0}}))
    validate_sweep(request({"model.dropout": {"type": "float", "low": 0.0, "high": 0.99}}))
    validate_sweep(request({"model.hidden_size": {"type": "int", "low": 1, "high": 256}}))


def test_an_int_below_its_fields_ge_is_refused():
    error = refused(request({"model.hidden_size": {"type": "int", "low": 0, "high": 64}}))
    assert error.path == "parameters.model.hidden_size" and ">= 1" in error.message


def test_low_above_high_is_refused():
    error = refused(request({"training.lr": {"type": "float", "low": 0.01, "high": 0.001}}))
    assert error.path == "parameters.training.lr" and "above high" in error.message


def test_a_log_scale_needs_a_positive_low_and_no_step():
    error = refused(
        request({"model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": True}})
    )
    assert error.path == "parameters.model.dropout" and "low > 0" in error.message
    stepped = {"type": "int", "low": 32, "high": 256, "step": 32, "log": True}
    error = refused(request({"model.hidden_size": stepped}))
    assert error.path == "parameters.model.hidden_size" and "no step" in error.message
    float_step = {"type": "float", "low": 1e-4, "high": 1e-2, "step": 1e-4, "log": True}
    assert refused(request({"training.lr": float_step})).path == "parameters.training.lr"


def test_an_objective_the_task_does_not_report_is_refused():
    error = refused(request(objective={"metric": "val/f1", "direction": "maximize"}))
    assert error.path == "objective.metric"
    assert "val/accuracy" in error.message and "val/f1" in error.message


def test_the_requests_shape_is_pydantics():
    with pytest.raises(ValidationError):
        validate_sweep(request(objective={"metric": "accuracy", "direction": "maximize"}))
    with pytest.raises(ValidationError):
        validate_sweep(request(sampler="bayes"))
    with pytest.raises(ValidationError):
        validate_sweep(request({"training.lr-x": {"type": "float", "low": 0.1, "high": 0.2}}))
    with pytest.raises(ValidationError):
        validate_sweep(request({}))


def test_an_invalid_base_spec_names_its_field():
    payload = request()
    payload["spec"]["model"]["type"] = "nope"
    assert refused(payload).path == "spec.model.type"


def test_a_grid_needs_a_step_for_each_float_and_enough_points():
    error = refused(request(sampler="grid"))
    assert error.path == "parameters.training.lr" and "step" in error.message
    grid = {
        "model.hidden_size": {"type": "int", "low": 64, "high": 256, "step": 64},  # 4
        "model.pooling": {"type": "categorical", "choices": ["last", "mean"]},  # 2
    }
    validate_sweep(request(grid, sampler="grid", max_trials=8))
    error = refused(request(grid, sampler="grid", max_trials=9))
    assert error.path == "max_trials" and "8 points" in error.message


def test_a_corner_that_makes_the_spec_invalid_is_refused():
    spec = copy.deepcopy(BASE)
    spec["model"] = {"type": "transformer", "embedding_dim": 128, "nhead": 4}
    error = refused(request({"model.nhead": {"type": "categorical", "choices": [4, 3]}}, spec=spec))
    assert error.path == "parameters.model.nhead" and "nhead = 3" in error.message
    # Each size fits alone; both at their highs overflow the parameter limit.
    sizes = {
        "model.embedding_dim": {"type": "int", "low": 64, "high": 4096},
        "model.hidden_size": {"type": "int", "low": 64, "high": 2048},
    }
    for path, param in sizes.items():
        validate_sweep(request({path: param}))
    error = refused(request(sizes))
    assert error.path == "parameters" and "parameters with a 16,000-token" in error.message


def test_a_float_on_an_integer_field_is_refused_at_its_corners():
    error = refused(request({"model.hidden_size": {"type": "float", "low": 64, "high": 128}}))
    assert error.path == "parameters.model.hidden_size"


def test_an_optional_sections_fields_can_be_swept():
    spec = {
        "name": "minilm",
        "model": {"type": "pretrained", "pretrained": "minilm", "lora": {"r": 8}},
    }
    validate_sweep(request({"model.lora.r": {"type": "int", "low": 4, "high": 16}}, spec=spec))
    error = refused(
        request({"model.lora.dropout": {"type": "float", "low": 0.0, "high": 1.0}}, spec=spec)
    )
    assert error.path == "parameters.model.lora.dropout" and "own bounds" in error.message


def test_trial_spec_sets_nested_paths_and_leaves_the_base_alone():
    base = copy.deepcopy(BASE)
    before = copy.deepcopy(base)
    params = {"training.lr": 0.003, "model.pooling": "mean", "data.tokenizer.vocab_size": 8000}
    spec = trial_spec(base, params, "sst2-lstm trial 4")
    assert base == before
    assert spec["name"] == "sst2-lstm trial 4"
    assert spec["training"] == {"epochs": 3, "batch_size": 64, "lr": 0.003}
    assert spec["model"]["pooling"] == "mean" and spec["model"]["hidden_size"] == 128
    assert spec["data"]["tokenizer"] == {"kind": "word", "vocab_size": 8000}
    assert spec["data"]["dataset"] == "sst2-train"
    made = set_path({"name": "x"}, "model.lora.r", 4)
    assert made == {"name": "x", "model": {"lora": {"r": 4}}}
    assert len(trial_spec(base, {}, "n" * 300)["name"]) == 200


def test_grid_space_and_corners_values():
    sweep = SweepSpec.model_validate(
        request(
            {
                "model.hidden_size": {"type": "int", "low": 32, "high": 128, "step": 32},
                "model.dropout": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.1},
                "training.lr": {"type": "float", "low": 0.001, "high": 0.002, "step": 0.0004},
                "model.pooling": {"type": "categorical", "choices": ["mean", "max"]},
            }
        )
    )
    assert grid_space(sweep) == {
        "model.hidden_size": [32, 64, 96, 128],
        "model.dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
        "training.lr": [0.001, 0.0014, 0.0018],  # 0.0022 would pass high
        "model.pooling": ["mean", "max"],
    }
    params = sweep.parameters
    assert corners(params["model.hidden_size"]) == [32, 128]
    assert corners(params["model.pooling"]) == ["mean", "max"]


def test_the_shipped_example_sweep_validates():
    import yaml

    path = Path(__file__).resolve().parents[1] / "examples" / "sst2-sweep.yaml"
    sweep, base = validate_sweep(yaml.safe_load(path.read_text()))
    assert set(sweep.parameters) == set(GOOD)
    assert base.training.epochs == 3 and sweep.pruner.type == "asha"
    assert base.data.dataset == "sst2-train"
