"""The numbers of an evaluation report, from plain lists (standard library only): each task's
plug-in runs its model over a split and hands the predictions to its section builder here.

classification  confusion matrix (counts, row-normalized), per-class precision / recall /
                F1 / support, macro and weighted averages, a reliability diagram with the
                expected calibration error, the most confident mistakes
tagging         per-entity-type scores the CoNLL way (shared.zoo.entity_metrics), the tag
                confusion matrix, missed and spurious entities
language_modeling  mean token loss by position in the context, perplexity, samples
seq2seq         corpus BLEU and chrF (sacrebleu, with signatures), the length ratio, BLEU by
                source length, the translations with the lowest sentence chrF

Conventions: a ratio with a zero denominator is 0.0 (precision with nothing predicted,
recall with no support); confusion rows are the true label, columns the prediction.

    classification_section(["neg", "pos"], [0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.8, 0.2]],
                           ["dull", "fine", "great"])["accuracy"]  # 2 / 3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shared.data.conll import entities
from shared.zoo.entity_metrics import entity_scores, token_accuracy

CALIBRATION_BINS = 10
MISTAKES = 20  # most confident mistakes kept per split
ENTITY_EXAMPLES = 20  # missed and spurious entities kept per split
POSITION_BUCKETS = 32
WORST_TRANSLATIONS = 20  # lowest sentence chrF kept per split
# Source lengths (whitespace-separated words) a seq2seq report breaks BLEU down by: [start, end).
SOURCE_LENGTH_BUCKETS = ((1, 11), (11, 21), (21, 31), (31, 10_000))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def confusion_counts(
    gold: Sequence[int], predicted: Sequence[int], classes: int
) -> list[list[int]]:
    """counts[true][predicted] over `classes` labels."""
    counts = [[0] * classes for _ in range(classes)]
    for true, guess in zip(gold, predicted, strict=True):
        counts[true][guess] += 1
    return counts


def row_normalized(counts: list[list[int]]) -> list[list[float]]:
    """Each row divided by its sum (the fraction of a true label predicted as each label);
    a row of zeros stays zeros."""
    return [[_ratio(c, sum(row)) for c in row] for row in counts]


def per_class(counts: list[list[int]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support (true count) of each label, from a confusion matrix."""
    rows = []
    for index, label in enumerate(labels):
        true_positives = counts[index][index]
        support = sum(counts[index])
        predicted = sum(row[index] for row in counts)
        precision, recall = _ratio(true_positives, predicted), _ratio(true_positives, support)
        rows.append(
            {
                "label": label,
                "precision": precision,
                "recall": recall,
                "f1": _f1(precision, recall),
                "support": support,
            }
        )
    return rows


def averages(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """(macro, weighted) precision, recall and F1: the mean over labels, and the mean
    weighted by support (each label's F1 averaged, as scikit-learn does)."""
    total = sum(row["support"] for row in rows)
    keys = ("precision", "recall", "f1")
    macro = {k: _ratio(sum(row[k] for row in rows), len(rows)) for k in keys}
    weighted = {k: _ratio(sum(row[k] * row["support"] for row in rows), total) for k in keys}
    return macro, weighted


def calibration(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """A reliability diagram over `bins` equal-width bins of the top probability, each
    [lower, upper) (the last one includes 1.0), and the expected calibration error
    ECE = sum over bins of |accuracy - confidence| * count / N. An empty bin has count 0
    and confidence and accuracy None."""
    counts, confidence_sums, correct_sums = [0] * bins, [0.0] * bins, [0] * bins
    for confidence, right in zip(confidences, correct, strict=True):
        index = min(max(int(confidence * bins), 0), bins - 1)
        counts[index] += 1
        confidence_sums[index] += confidence
        correct_sums[index] += int(right)
    total = sum(counts)
    ece, rows = 0.0, []
    for index in range(bins):
        n = counts[index]
        mean_confidence = confidence_sums[index] / n if n else None
        accuracy = correct_sums[index] / n if n else None
        if mean_confidence is not None and accuracy is not None:
            ece += abs(accuracy - mean_confidence) * n / total
        rows.append(
            {
                "lower": index / bins,
                "upper": (index + 1) / bins,
                "count": n,
                "confidence": mean_confidence,
                "accuracy": accuracy,
            }
        )
    return {"ece": ece, "bins": rows}


def classification_section(
    labels: Sequence[str],
    gold: Sequence[int],
    probabilities: Sequence[Sequence[float]],
    texts: Sequence[str],
) -> dict[str, Any]:
    """The classification section of one split: `probabilities` (N, C) as /predict serves
    them, the prediction being the likeliest label (the first of equals)."""
    predicted = [max(range(len(row)), key=row.__getitem__) for row in probabilities]
    confidence = [row[p] for row, p in zip(probabilities, predicted, strict=True)]
    counts = confusion_counts(gold, predicted, len(labels))
    rows = per_class(counts, labels)
    macro, weighted = averages(rows)
    right = [g == p for g, p in zip(gold, predicted, strict=True)]
    wrong = sorted((i for i, ok in enumerate(right) if not ok), key=lambda i: -confidence[i])
    return {
        "examples": len(gold),
        "labels": list(labels),
        "accuracy": _ratio(sum(right), len(right)),
        "confusion": {"counts": counts, "normalized": row_normalized(counts)},
        "per_class": rows,
        "macro": macro,
        "weighted": weighted,
        "calibration": calibration(confidence, right),
        "mistakes": [
            {
                "text": texts[i],
                "label": labels[gold[i]],
                "prediction": labels[predicted[i]],
                "probability": confidence[i],
            }
            for i in wrong[:MISTAKES]
        ],
    }


def classification_summary(split: str, section: dict[str, Any]) -> dict[str, float]:
    return {
        f"{split}/accuracy": section["accuracy"],
        f"{split}/macro_f1": section["macro"]["f1"],
        f"{split}/weighted_f1": section["weighted"]["f1"],
        f"{split}/ece": section["calibration"]["ece"],
    }


def entity_examples(
    gold: Sequence[list[str]],
    predicted: Sequence[list[str]],
    tokens: Sequence[list[str]],
    limit: int = ENTITY_EXAMPLES,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(missed, spurious): up to `limit` gold entities not predicted (exact type and span)
    and predicted ones not in the gold, in sentence order, with their sentence's tokens."""
    missed: list[dict[str, Any]] = []
    spurious: list[dict[str, Any]] = []
    for gold_tags, predicted_tags, words in zip(gold, predicted, tokens, strict=True):
        gold_set, predicted_set = set(entities(gold_tags)), set(entities(predicted_tags))
        for found, other, into in (
            (gold_set, predicted_set, missed),
            (predicted_set, gold_set, spurious),
        ):
            for kind, start, end in sorted(found - other, key=lambda e: (e[1], e[2], e[0])):
                if len(into) < limit:
                    into.append(
                        {
                            "tokens": list(words),
                            "type": kind,
                            "start": start,
                            "end": end,
                            "text": " ".join(words[start:end]),
                        }
                    )
        if len(missed) >= limit and len(spurious) >= limit:
            break
    return missed, spurious


def tagging_section(
    tags: Sequence[str],
    gold: Sequence[list[str]],
    predicted: Sequence[list[str]],
    tokens: Sequence[list[str]],
) -> dict[str, Any]:
    """The tagging section of one split: the gold and decoded tags of each sentence's words
    (their first pieces), and the words themselves."""
    scores = entity_scores(list(gold), list(predicted))
    per_type = [{"type": kind, **values} for kind, values in scores["per_type"].items()]
    keys = ("precision", "recall", "f1")
    index = {tag: i for i, tag in enumerate(tags)}
    counts = confusion_counts(
        [index[t] for sentence in gold for t in sentence],
        [index[t] for sentence in predicted for t in sentence],
        len(tags),
    )
    missed, spurious = entity_examples(gold, predicted, tokens)
    return {
        "examples": len(gold),
        "tags": list(tags),
        "token_accuracy": token_accuracy(list(gold), list(predicted)),
        "entities": {
            "per_type": per_type,
            "micro": {k: scores[k] for k in keys},
            "macro": {k: _ratio(sum(row[k] for row in per_type), len(per_type)) for k in keys},
        },
        "tag_confusion": {"labels": list(tags), "counts": counts},
        "missed": missed,
        "spurious": spurious,
    }


def tagging_summary(split: str, section: dict[str, Any]) -> dict[str, float]:
    found = section["entities"]
    return {
        f"{split}/token_accuracy": section["token_accuracy"],
        f"{split}/entity_f1": found["micro"]["f1"],
        f"{split}/entity_precision": found["micro"]["precision"],
        f"{split}/entity_recall": found["micro"]["recall"],
        f"{split}/macro_f1": found["macro"]["f1"],
    }


def loss_by_position(
    sums: Sequence[float], counts: Sequence[int], buckets: int = POSITION_BUCKETS
) -> list[dict[str, Any]]:
    """Mean token loss over context positions [start, end), in at most `buckets` buckets of
    equal width (the last may be shorter), from per-position loss sums and token counts."""
    width = max(1, math.ceil(len(sums) / buckets))
    rows = []
    for start in range(0, len(sums), width):
        end = min(start + width, len(sums))
        rows.append(
            {
                "start": start,
                "end": end,
                "loss": _ratio(sum(sums[start:end]), sum(counts[start:end])),
            }
        )
    return rows


def language_modeling_section(
    windows: int, sums: Sequence[float], counts: Sequence[int], samples: list[dict[str, Any]]
) -> dict[str, Any]:
    """The language-modelling section of one split: per-position loss sums (nats) and target
    counts over `windows` context windows; `samples` only for the validation split."""
    loss = _ratio(sum(sums), sum(counts))
    section: dict[str, Any] = {
        "windows": windows,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "loss_by_position": loss_by_position(sums, counts),
    }
    if samples:
        section["samples"] = samples
    return section


def language_modeling_summary(split: str, section: dict[str, Any]) -> dict[str, float]:
    return {f"{split}/loss": section["loss"], f"{split}/perplexity": section["perplexity"]}


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacrebleu's corpus BLEU and chrF of detokenized `hypotheses` against one reference
    each, their signatures, and BLEU's hypothesis and reference lengths (13a tokens)."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    score = bleu.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": score.score,
        "chrf": chrf.corpus_score(list(hypotheses), [list(references)]).score,
        "signatures": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
        "hypothesis_tokens": score.sys_len,
        "reference_tokens": score.ref_len,
    }


def translation_section(
    sources: Sequence[str], references: Sequence[str], hypotheses: Sequence[str], beam_size: int
) -> dict[str, Any]:
    """The seq2seq section of one split: corpus BLEU and chrF of detokenized `hypotheses`
    against `references` (sacrebleu, 13a tokenization, signatures kept), the hypotheses'
    length over the references' (BLEU's sys_len / ref_len), BLEU by source length and the
    WORST_TRANSLATIONS pairs of lowest sentence chrF."""
    from sacrebleu.metrics import BLEU, CHRF

    corpus = corpus_scores(hypotheses, references)
    by_length = []
    for start, end in SOURCE_LENGTH_BUCKETS:
        kept = [i for i, s in enumerate(sources) if start <= len(s.split()) < end]
        if kept:
            score = BLEU().corpus_score(
                [hypotheses[i] for i in kept], [[references[i] for i in kept]]
            )
            label = f"{start}-{end - 1}" if end < 10_000 else f"{start}+"
            by_length.append({"words": label, "pairs": len(kept), "bleu": score.score})
    sentence = CHRF()
    scored = [
        (sentence.sentence_score(h, [r]).score, i)
        for i, (h, r) in enumerate(zip(hypotheses, references, strict=True))
    ]
    worst = [
        {
            "source": sources[i],
            "reference": references[i],
            "hypothesis": hypotheses[i],
            "chrf": value,
        }
        for value, i in sorted(scored)[:WORST_TRANSLATIONS]
    ]
    return {
        "pairs": len(hypotheses),
        "beam_size": beam_size,
        "bleu": corpus["bleu"],
        "chrf": corpus["chrf"],
        "length_ratio": _ratio(corpus["hypothesis_tokens"], corpus["reference_tokens"]),
        "signatures": corpus["signatures"],
        "by_source_length": by_length,
        "worst": worst,
    }


def translation_summary(split: str, section: dict[str, Any]) -> dict[str, float]:
    return {f"{split}/bleu": section["bleu"], f"{split}/chrf": section["chrf"]}
