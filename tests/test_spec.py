import pytest
from pydantic import ValidationError

from shared.spec import (
    MAX_MODEL_PARAMETERS,
    JobSpec,
    TokenizerSpec,
    parse_spec,
)
from tests.helpers import tiny_spec


def test_only_name_is_required_and_defaults_validate():
    spec = parse_spec({"name": "x"})
    assert spec.model.type == "lstm" and spec.training.epochs >= 1
    with pytest.raises(ValidationError) as info:
        parse_spec({})
    assert info.value.errors()[0]["loc"] == ("name",)


def test_every_field_has_a_description():
    sections = [JobSpec, TokenizerSpec] + [
        JobSpec.model_fields[s].annotation
        for s in ("data", "model", "training", "resources", "checkpoint")
    ]
    for section in sections:
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name} has no description"


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"model": {"type": "cnn"}}, ("model", "type")),
        ({"training": {"lr": -0.1}}, ("training", "lr")),
        ({"training": {"epochs": "five"}}, ("training", "epochs")),
        ({"model": {"hidden_size": 64, "colour": "red"}}, ("model", "colour")),
        ({"surprise": True}, ("surprise",)),
        ({"model": {"hidden_size": 8192, "num_layers": 24}}, ("model",)),
        ({"model": {"type": "transformer", "embedding_dim": 30, "nhead": 4}}, ("model",)),
        ({"data": {"dataset": "builtin:nope"}}, ("data", "dataset")),
        ({"resources": {"queue": "Bad Queue!"}}, ("resources", "queue")),
        ({"resources": {"priority": 101}}, ("resources", "priority")),
        ({"resources": {"priority": "urgent"}}, ("resources", "priority")),
        ({"resources": {"preemptible": "sometimes"}}, ("resources", "preemptible")),
    ],
)
def test_bad_specs_name_the_field(patch, path):
    with pytest.raises(ValidationError) as info:
        parse_spec(tiny_spec(**patch))
    assert path in [e["loc"] for e in info.value.errors()]


def test_size_bound_counts_the_vocabulary():
    # A 200-wide LSTM is fine with a small vocabulary, too big with a million tokens x 4096 dims.
    parse_spec(tiny_spec(model={"hidden_size": 200}))
    with pytest.raises(ValidationError, match="parameters"):
        parse_spec(
            tiny_spec(model={"embedding_dim": 4096}, data={"tokenizer": {"vocab_size": 1_000_000}})
        )
    assert MAX_MODEL_PARAMETERS == 100_000_000


def test_spec_round_trips_through_json():
    spec = parse_spec(tiny_spec())
    assert parse_spec(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(("given", "stored"), [("low", 25), ("Normal", 50), ("high", 75), (0, 0)])
def test_priority_names_are_aliases_of_numbers(given, stored):
    assert parse_spec(tiny_spec(resources={"priority": given})).resources.priority == stored
