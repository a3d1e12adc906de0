"""Uploaded dataset files (bytes) -> rows, and statistics that describe them.

Formats: delimited text with a header (TSV, CSV), JSON Lines, plain text (language
modelling) and CoNLL (one token a line, entity tags). Every problem is a DatasetFormatError
that says what is wrong, names the upload option to fix (`field`) and, where there is one,
the 1-based line and the byte offset, so the API can show the user exactly where to look.
Standard library only: the API imports this without torch.

The readers live beside it: upload.py (decoding, plain text, ParsedDataset, the error),
tabular.py (TSV, CSV, JSON Lines) and conll.py (CoNLL, tag schemes); import them from here.

    parsed = parse_delimited(data, delimiter="\\t", text_column="sentence", label_column="label")
    statistics(parsed)  # {"rows": 67349, "label_counts": {"0": 29780, "1": 37569}, ...}

Rows use fixed keys whatever the file calls its columns: {"text", "label"} for
classification, {"text"} for plain text, {"tokens", "tags"} for CoNLL (tags in IOB2),
{"source", "target"} for seq2seq pairs (TSV, CSV or JSON Lines).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.data.conll import SCHEMES, detect_scheme, entities, iob2_to_bioes, parse_conll, to_iob2
from shared.data.tabular import parse_delimited, parse_jsonl
from shared.data.upload import DatasetFormatError, ParsedDataset, decode, parse_text

__all__ = [
    "SCHEMES",
    "DatasetFormatError",
    "ParsedDataset",
    "decode",
    "detect_scheme",
    "entities",
    "iob2_to_bioes",
    "parse_conll",
    "parse_delimited",
    "parse_jsonl",
    "parse_text",
    "statistics",
    "to_iob2",
]


# --- statistics --------------------------------------------------------------------------


def statistics(parsed: ParsedDataset) -> dict[str, Any]:
    """Numbers that describe a parsed dataset, for the user to check it before training.

    Texts and CoNLL: "rows", "tokens_per_row" ({"p50", "p95", "max", "mean"}; tokens split
    on whitespace, a CoNLL row's tokens are its sentence) and "vocabulary_size" (distinct
    tokens). With labels: "label_counts" and "num_labels". Text: "characters" (distinct)
    and "text_length". CoNLL: "sentences", "tokens", "entities" and "tag_counts" (IOB2).
    Pairs: "rows" and "pairs" (the same count), "source_tokens_per_row",
    "target_tokens_per_row", "source_vocabulary_size", "target_vocabulary_size" and
    "length_ratio" (target tokens / source tokens over the whole file, to 2 places).
    Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the
    value at rank ceil(p / 100 * n), so it is always one of the values.
    """
    if parsed.format == "conll":
        return _conll_statistics(parsed.rows)
    if "source" in parsed.columns:
        return _pair_statistics(parsed.rows)
    token_lists = [row["text"].split() for row in parsed.rows]
    stats: dict[str, Any] = {"rows": len(parsed.rows), **_token_statistics(token_lists)}
    if "label" in parsed.columns:
        counts = Counter(row["label"] for row in parsed.rows)
        stats["label_counts"] = {label: counts[label] for label in sorted(counts, key=_label_key)}
        stats["num_labels"] = len(counts)
    if parsed.text is not None:
        stats["characters"] = len(set(parsed.text))
        stats["text_length"] = len(parsed.text)
    return stats


def _conll_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    token_lists = [row["tokens"] for row in rows]
    entity_counts = Counter(kind for row in rows for kind, _, _ in entities(row["tags"]))
    tag_counts = Counter(tag for row in rows for tag in row["tags"])
    return {
        "rows": len(rows),
        **_token_statistics(token_lists),
        "sentences": len(rows),
        "tokens": sum(map(len, token_lists)),
        "entities": dict(sorted(entity_counts.items())),
        "tag_counts": dict(sorted(tag_counts.items())),
    }


def _pair_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    # No plain "tokens_per_row" / "vocabulary_size": which side they described would be a guess.
    sources = [row["source"].split() for row in rows]
    targets = [row["target"].split() for row in rows]
    source_tokens, target_tokens = sum(map(len, sources)), sum(map(len, targets))
    return {
        "rows": len(rows),
        "pairs": len(rows),
        **_token_statistics(sources, prefix="source_"),
        **_token_statistics(targets, prefix="target_"),
        "length_ratio": round(target_tokens / source_tokens, 2) if source_tokens else 0.0,
    }


def _token_statistics(token_lists: list[list[str]], prefix: str = "") -> dict[str, Any]:
    lengths = sorted(map(len, token_lists))
    vocabulary = {token for tokens in token_lists for token in tokens}
    mean = round(sum(lengths) / len(lengths), 2) if lengths else 0.0
    return {
        f"{prefix}tokens_per_row": {
            "p50": _nearest_rank(lengths, 50),
            "p95": _nearest_rank(lengths, 95),
            "max": lengths[-1] if lengths else 0,
            "mean": mean,
        },
        f"{prefix}vocabulary_size": len(vocabulary),
    }


def _nearest_rank(sorted_values: list[int], percent: int) -> int:
    """The value at rank ceil(percent / 100 * n), in integers so 95% of 20 is rank 19."""
    if not sorted_values:
        return 0
    rank = max(1, -(-percent * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def _label_key(label: str) -> tuple[int, int, str]:
    # Integer labels in numeric order ("2" before "10"), then the others alphabetically.
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)
