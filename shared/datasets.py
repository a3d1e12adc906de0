"""Dataset references and the built-in datasets shipped in shared/builtin/.

A reference is a string in the job spec: `builtin:<name>` for now. Loading returns plain
rows (dicts of column -> string) so the trainer owns tokenization and batching.
"""

from __future__ import annotations

import csv
from pathlib import Path

_BUILTIN_DIR = Path(__file__).with_name("builtin")

# name -> (file, description)
BUILTIN_DATASETS: dict[str, tuple[str, str]] = {
    "sentiment": (
        "sentiment.tsv",
        "800 generated movie-review sentences, positive/negative, with negation and contrast.",
    ),
}


class DatasetError(ValueError):
    """A dataset cannot be read or lacks what the spec asks for."""


def load_rows(reference: str) -> list[dict[str, str]]:
    """Rows of a dataset reference, each a dict of column name -> raw string."""
    if not reference.startswith("builtin:"):
        raise DatasetError(f"unsupported dataset reference {reference!r}")
    name = reference.removeprefix("builtin:")
    if name not in BUILTIN_DATASETS:
        raise DatasetError(f"unknown built-in dataset {name!r}")
    path = _BUILTIN_DIR / BUILTIN_DATASETS[name][0]
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def text_label_pairs(
    rows: list[dict[str, str]], text_field: str, label_field: str
) -> tuple[list[str], list[str]]:
    """Split rows into texts and labels, naming the missing column if there is one."""
    if not rows:
        raise DatasetError("dataset has no rows")
    for column in (text_field, label_field):
        if column not in rows[0]:
            raise DatasetError(
                f"dataset has no column {column!r}; columns: {', '.join(sorted(rows[0]))}"
            )
    return [r[text_field] for r in rows], [r[label_field] for r in rows]
