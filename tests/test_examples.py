"""Every spec in examples/ is valid as shipped."""

from pathlib import Path

import pytest
import yaml

from shared.spec import parse_spec

# Job specs; a sweep (`*-sweep.yaml`) is checked by tests/test_sweep_spec.py.
EXAMPLES = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")
    if not p.name.endswith("-sweep.yaml")
)


def test_there_is_an_example_per_task():
    tasks = {parse_spec(yaml.safe_load(p.read_text())).task for p in EXAMPLES}
    assert tasks == {"classification", "language_modeling", "tagging", "seq2seq"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_parses(path):
    spec = parse_spec(yaml.safe_load(path.read_text()))
    assert spec.name
