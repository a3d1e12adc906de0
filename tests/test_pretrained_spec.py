"""The spec of a pretrained job: its fields, fine-tuning's defaults, what it refuses, and the
estimate from the base model's real parameter count (pure functions; no torch)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.jobs.estimate import estimate_training
from shared.spec import FINE_TUNING_DEFAULTS, parse_spec

MINILM = {  # the registry's summary of all-MiniLM-L6-v2
    "parameters": 22_713_728,
    "hidden_size": 384,
    "num_layers": 6,
    "num_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "max_positions": 512,
}


def pretrained(**sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "ft", "model": {"type": "pretrained", "pretrained": "minilm"}}
    for key, value in sections.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return spec


def refusal(payload: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_spec(payload)
    return str(caught.value)


def test_fine_tuning_defaults_apply_unless_the_spec_sets_them():
    spec = parse_spec(pretrained())
    for name, value in FINE_TUNING_DEFAULTS.items():
        assert getattr(spec.training, name) == value
    assert spec.model.pooling == "mean"
    given = parse_spec(pretrained(training={"lr": 1e-4, "scheduler": "cosine", "warmup_steps": 5}))
    assert (given.training.lr, given.training.scheduler) == (1e-4, "cosine")
    assert given.training.warmup_ratio is None  # warmup_steps given: no ratio on top
    # A model trained from scratch keeps its own defaults.
    scratch = parse_spec({"name": "s"})
    assert scratch.training.lr == 2e-3 and scratch.training.scheduler == "cosine"


def test_a_stored_spec_validates_to_itself():
    for payload in (
        pretrained(model={"lora": {"r": 4}, "pooling": "cls"}),
        pretrained(model={"freeze": "encoder"}, task="tagging"),
        {"name": "s", "model": {"type": "gru"}},
    ):
        spec = parse_spec(payload)
        assert parse_spec(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"name": "x", "model": {"type": "pretrained"}}, "needs `pretrained`"),
        (pretrained(model={"hidden_size": 64}), "hidden_size: a pretrained model's sizes"),
        (pretrained(model={"pooling": "last"}), "pooling last is for recurrent"),
        (pretrained(data={"tokenizer": {"kind": "bpe"}}), "data.tokenizer"),
        (pretrained(model={"lora": {"target_modules": ["q v"]}}), "not a module name"),
        (pretrained(model={"lora": {"r": 0}}), "model.lora.r"),
        (pretrained(model={"freeze": "everything"}), "model.freeze"),
        ({"name": "x", "model": {"type": "lstm", "freeze": "encoder"}}, "freeze applies only"),
        ({"name": "x", "model": {"type": "gru", "pooling": "cls"}}, "pooling cls needs"),
        ({"name": "x", "model": {"type": "lstm", "lora": {}}}, "lora applies only"),
        (pretrained(model={"lora": {}, "freeze": "encoder"}), "leave freeze out"),
    ],
)
def test_refusals_name_the_field(payload, words):
    assert words in refusal(payload)


def test_language_modelling_accepts_a_pretrained_model_and_refuses_bilstm():
    assert parse_spec(pretrained(task="language_modeling")).model.type == "pretrained"
    assert "pretrained causal model" in refusal(
        {"name": "x", "task": "language_modeling", "model": {"type": "bilstm"}}
    )


def test_estimate_counts_the_base_models_parameters_and_what_trains():
    full = estimate_training(parse_spec(pretrained()), "cpu", 2, MINILM)
    assert full["parameters"] == MINILM["parameters"] + 384 * 2 + 2
    assert full["trainable_parameters"] == full["parameters"]
    lora = estimate_training(parse_spec(pretrained(model={"lora": {"r": 8}})), "cpu", 2, MINILM)
    adapters = 6 * 2 * 8 * 2 * 384  # query and value in each of 6 layers
    assert lora["trainable_parameters"] == adapters + 384 * 2 + 2
    assert lora["optimizer_bytes"] < full["optimizer_bytes"] / 50
    head_only = estimate_training(
        parse_spec(pretrained(model={"freeze": "encoder"})), "cpu", 2, MINILM
    )
    assert head_only["trainable_parameters"] == 384 * 2 + 2
    checkpointed = estimate_training(
        parse_spec(pretrained(model={"gradient_checkpointing": True})), "cpu", 2, MINILM
    )
    assert checkpointed["activations_bytes"] < full["activations_bytes"]
    # A language model's head is the base model's own.
    lm = estimate_training(parse_spec(pretrained(task="language_modeling")), "cpu", 2, MINILM)
    assert lm["parameters"] == MINILM["parameters"]
