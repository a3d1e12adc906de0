"""Sequence-tagging scores, read the way CoNLL's conlleval reads them. Standard library only.

An entity counts as found only when its type and its exact span match a gold entity; a
partly overlapping span is one wrong prediction and one missed entity. Counts are summed
over all sentences before dividing (micro-average), so a long sentence weighs more.
Scores are fractions in [0, 1], where conlleval prints percentages.

    entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    # {"precision": 0.0, "recall": 0.0, "f1": 0.0, "per_type": {"PER": {...}}, ...}
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.data.formats import entities


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1 of IOB2 tag sequences, overall and per type.

    Returns {"precision", "recall", "f1", "true_positives", "predicted", "gold", "per_type":
    {type: {"precision", "recall", "f1", "support"}}}, support being the gold count; a
    type appears when it is in the gold or the predicted tags. Precision is 0 when nothing
    is predicted, recall 0 when there is no gold entity. Raises ValueError when the two
    differ in sentence count or a sentence's tag counts differ.
    """
    _check_lengths(gold, predicted)
    true_positives: Counter[str] = Counter()
    predicted_counts: Counter[str] = Counter()
    gold_counts: Counter[str] = Counter()
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_entities = set(entities(gold_tags))  # (type, start, end): exact span and type
        predicted_entities = set(entities(predicted_tags))
        gold_counts.update(kind for kind, _, _ in gold_entities)
        predicted_counts.update(kind for kind, _, _ in predicted_entities)
        true_positives.update(kind for kind, _, _ in gold_entities & predicted_entities)
    per_type = {
        kind: {
            **_scores(true_positives[kind], predicted_counts[kind], gold_counts[kind]),
            "support": gold_counts[kind],
        }
        for kind in sorted(gold_counts | predicted_counts)
    }
    found, guessed, expected = (
        sum(counts.values()) for counts in (true_positives, predicted_counts, gold_counts)
    )
    return {
        **_scores(found, guessed, expected),
        "per_type": per_type,
        "true_positives": found,
        "predicted": guessed,
        "gold": expected,
    }


def token_accuracy(gold: list[list[str]], predicted: list[list[str]]) -> float:
    """The fraction of tokens, O included (as conlleval counts), whose tag is exactly right.

    0.0 when there are no tokens; ValueError on a length mismatch, as in entity_scores.
    """
    _check_lengths(gold, predicted)
    total = sum(map(len, gold))
    correct = sum(
        g == p
        for gold_tags, predicted_tags in zip(gold, predicted, strict=True)
        for g, p in zip(gold_tags, predicted_tags, strict=True)
    )
    return correct / total if total else 0.0


def _scores(true_positives: int, predicted: int, gold: int) -> dict[str, float]:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    total = precision + recall
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / total if total else 0.0,
    }


def _check_lengths(gold: list[list[str]], predicted: list[list[str]]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted"
            )
