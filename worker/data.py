"""Turn a dataset reference into padded, length-bucketed batches for the trainer.

Batches are padded only to their own longest sequence (dynamic padding), and sequences of
similar length are batched together (bucketing), so little compute is spent on pads.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from shared.datasets import DatasetError, load_rows, text_label_pairs
from shared.spec import DataSpec
from shared.text import PAD_ID, Vocabulary

# Examples sorted together when bucketing, in batches: larger pools pad less but shuffle less.
BUCKET_POOL_BATCHES = 50


@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ClassificationData:
    vocab: Vocabulary
    labels: list[str]
    train: Encoded
    val: Encoded


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(count * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def prepare_classification(
    data: DataSpec, seed: int, vocab: Vocabulary | None = None, labels: list[str] | None = None
) -> ClassificationData:
    """Load, split (seeded), build the vocabulary on the training split only, and encode."""
    texts, raw_labels = text_label_pairs(load_rows(data.dataset), data.text_field, data.label_field)
    train_idx, val_idx = split_indices(len(texts), data.val_fraction, seed)
    if len(train_idx) < 1:
        raise DatasetError("the training split is empty; lower data.val_fraction")
    if vocab is None:
        vocab = Vocabulary.build(
            (texts[i] for i in train_idx), data.max_vocab_size, data.min_frequency, data.lowercase
        )
    if labels is None:
        labels = sorted(set(raw_labels))
    if len(labels) < 2:
        raise DatasetError(f"classification needs at least 2 labels, found {len(labels)}")
    label_ids = {name: i for i, name in enumerate(labels)}

    def encode(indices: list[int]) -> Encoded:
        unknown = {raw_labels[i] for i in indices} - label_ids.keys()
        if unknown:
            raise DatasetError(f"labels not seen in training: {sorted(unknown)[:5]}")
        return Encoded(
            [vocab.encode(texts[i], data.max_length) for i in indices],
            [label_ids[raw_labels[i]] for i in indices],
        )

    return ClassificationData(vocab, labels, encode(train_idx), encode(val_idx))


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
