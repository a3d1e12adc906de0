"""Turn a dataset reference into padded, length-bucketed batches for the trainer.

Batches are padded only to their own longest sequence (dynamic padding), and sequences of
similar length are batched together (bucketing), so little compute is spent on pads.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from shared import datasets as registry
from shared.dataset_formats import ParsedDataset
from shared.spec import DataSpec
from shared.storage import ArtifactStore
from shared.text import PAD_ID
from shared.tokenization import Tokenizer, train_tokenizer

# Examples sorted together when bucketing, in batches: larger pools pad less but shuffle less.
BUCKET_POOL_BATCHES = 50
ROLES = ("train", "validation", "test")


class DataError(ValueError):
    """The data cannot be used for this job; the message says why."""


@dataclass(frozen=True)
class Splits:
    """Parsed rows per role; validation/test None when the spec names none."""

    train: ParsedDataset
    validation: ParsedDataset | None = None
    test: ParsedDataset | None = None


@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ClassificationData:
    tokenizer: Tokenizer
    labels: list[str]
    train: Encoded
    val: Encoded
    test: Encoded | None


def load_splits(
    data: DataSpec, store: ArtifactStore, linked: dict[str, registry.Resolved] | None = None
) -> Splits:
    """Parse each role's dataset: built-ins from the spec, uploads from the job's pinned links."""
    linked = linked or {}
    references = {
        "train": data.dataset,
        "validation": data.validation_dataset,
        "test": data.test_dataset,
    }
    parsed: dict[str, ParsedDataset | None] = {}
    for role, reference in references.items():
        if reference is None:
            parsed[role] = None
            continue
        if reference.startswith("builtin:"):
            resolved: registry.Resolved = registry.BUILTIN_DATASETS[
                reference.removeprefix("builtin:")
            ]
        elif role in linked:
            resolved = linked[role]
        else:
            raise DataError(f"the {role} dataset {reference!r} was not resolved at submit")
        parsed[role] = registry.load(resolved, store)
    train = parsed["train"]
    assert train is not None
    return Splits(train, parsed["validation"], parsed["test"])


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(count * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def prepare_classification(
    data: DataSpec,
    seed: int,
    splits: Splits,
    tokenizer: Tokenizer | None = None,
    labels: list[str] | None = None,
) -> ClassificationData:
    """Split (seeded) unless validation data is given, train the tokenizer on the training
    split only (or reuse a checkpoint's), and encode every split."""
    rows = splits.train.rows
    if splits.validation is None:
        train_idx, val_idx = split_indices(len(rows), data.val_fraction, seed)
        if not train_idx:
            raise DataError("the training split is empty; lower data.val_fraction")
        train_rows, val_rows = [rows[i] for i in train_idx], [rows[i] for i in val_idx]
    else:
        train_rows, val_rows = rows, splits.validation.rows
    if tokenizer is None:
        cfg = data.tokenizer
        tokenizer = train_tokenizer(
            cfg.kind,
            (r["text"] for r in train_rows),
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            lowercase=cfg.lowercase,
        )
    if labels is None:
        labels = sorted({r["label"] for r in train_rows})
    if len(labels) < 2:
        raise DataError(f"classification needs at least 2 labels, found {len(labels)}")
    label_ids = {name: i for i, name in enumerate(labels)}

    def encode(split: list[dict[str, str]], name: str) -> Encoded:
        unknown = {r["label"] for r in split} - label_ids.keys()
        if unknown:
            raise DataError(f"{name} labels not seen in training: {sorted(unknown)[:5]}")
        return Encoded(
            [tokenizer.encode(r["text"], data.max_length) for r in split],
            [label_ids[r["label"]] for r in split],
        )

    test = encode(splits.test.rows, "test") if splits.test is not None else None
    return ClassificationData(
        tokenizer, labels, encode(train_rows, "train"), encode(val_rows, "validation"), test
    )


def collate(
    ids: list[list[int]], targets: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence in this batch: tokens (B, T), lengths (B,), targets (B,)."""
    lengths = torch.tensor([len(seq) for seq in ids], dtype=torch.long)
    tokens = torch.full((len(ids), int(lengths.max())), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(ids):
        tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return tokens, lengths, torch.tensor(targets, dtype=torch.long)


def batch_order(lengths: list[int], batch_size: int, seed: int | None) -> list[list[int]]:
    """Index batches. With a seed: shuffled, bucketed by length within pools, batches shuffled.

    Without a seed (evaluation): sorted by length, for the least padding.
    """
    indices = list(range(len(lengths)))
    if seed is None:
        indices.sort(key=lambda i: lengths[i])
        return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(indices)
    pool = batch_size * BUCKET_POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(indices), pool):
        chunk = sorted(indices[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def iterate(data: Encoded, batch_size: int, seed: int | None) -> Iterator[tuple[torch.Tensor, ...]]:
    for batch in batch_order([len(s) for s in data.ids], batch_size, seed):
        yield collate([data.ids[i] for i in batch], [data.targets[i] for i in batch])
