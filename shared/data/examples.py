"""Datasets -> encoded examples -> padded, length-bucketed batches; each task's plug-in
(shared.zoo) picks its `prepare_*` function.

classification  one text -> one label            SequenceExamples (targets: ints)
tagging         tokens -> one tag per token      SequenceExamples (targets: a tag per piece,
                                                 IGNORE on all but each word's first piece
                                                 and on a pretrained model's special tokens)
language_modeling  one token stream              StreamExamples (fixed-context windows, the
                                                 window grid shifted by a seeded offset per epoch)

Batches are padded only to their own longest sequence, and similar lengths are batched
together (bucketing), so little compute is spent on pads. Batch order is a pure function of
(seed, epoch), so a checkpoint's (epoch, batch index) is enough to resume exactly.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from shared.data import datasets as registry
from shared.data.formats import ParsedDataset
from shared.data.tokenization import Tokenizer, WordTokenizer, train_tokenizer
from shared.infra.cache import LocalCache
from shared.infra.storage import ArtifactStore, LocalStore
from shared.protocol import IGNORE_INDEX, TrainerFailure
from shared.spec import DataSpec, JobSpec, dataset_references
from shared.zoo.encoders import pad_right

# Examples sorted together when bucketing, in batches: larger pools pad less but shuffle less.
BUCKET_POOL_BATCHES = 50
IGNORE = IGNORE_INDEX
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class DataError(TrainerFailure, ValueError):
    """The data cannot be used for this job; the message says why."""


@dataclass(frozen=True)
class Splits:
    """Parsed rows per role; validation/test None when the spec names none."""

    train: ParsedDataset
    validation: ParsedDataset | None = None
    test: ParsedDataset | None = None


class Examples(Protocol):
    def __len__(self) -> int: ...
    def batch_order(self, batch_size: int, seed: int | None) -> list[list[int]]: ...
    def collate(self, batch: list[int]) -> Batch: ...


@dataclass(frozen=True)
class SequenceExamples:
    ids: list[list[int]]
    targets: Sequence[int] | Sequence[list[int]]

    def __len__(self) -> int:
        return len(self.ids)

    def batch_order(self, batch_size: int, seed: int | None) -> list[list[int]]:
        return batch_order([len(s) for s in self.ids], batch_size, seed)

    def collate(self, batch: list[int]) -> Batch:
        return collate([self.ids[i] for i in batch], [self.targets[i] for i in batch])


@dataclass(frozen=True)
class StreamExamples:
    """Fixed-context language-model windows over one token stream: inputs (T), targets shifted by one."""

    stream: torch.Tensor  # (N,) int64
    context: int

    def __len__(self) -> int:
        return max(1, (len(self.stream) - 1) // self.context)

    def batch_order(self, batch_size: int, seed: int | None) -> list[list[int]]:
        """Window start positions per batch; with a seed, a shifted grid in shuffled order."""
        offset = 0 if seed is None else random.Random(seed).randrange(self.context)
        last_start = len(self.stream) - 1 - self.context
        starts = list(range(offset, max(last_start, 0) + 1, self.context)) or [0]
        if seed is not None:
            random.Random(seed + 1).shuffle(starts)
        return [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]

    def collate(self, batch: list[int]) -> Batch:
        span = min(self.context, len(self.stream) - 1)
        windows = torch.stack([self.stream[s : s + span + 1] for s in batch])  # (B, T + 1)
        lengths = torch.full((len(batch),), span, dtype=torch.long)
        return windows[:, :-1].contiguous(), lengths, windows[:, 1:].contiguous()


@dataclass(frozen=True)
class Prepared:
    tokenizer: Tokenizer
    labels: list[str]  # class names (classification) or tags (tagging); [] for language models
    train: Examples
    val: Examples
    test: Examples | None


def load_splits(
    spec: JobSpec,
    store: ArtifactStore | None,
    linked: dict[str, registry.Resolved] | None = None,
    cache: LocalCache | None = None,
    note: Callable[[str], None] | None = None,
) -> Splits:
    """Parse each role's dataset: built-ins from the spec, uploads from the job's pinned links
    (from a remote store through `cache`; `note` hears where each came from)."""
    linked = linked or {}
    references = dataset_references(spec)
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
        told = None if note is None else functools.partial(_note_role, note, role)
        parsed[role] = registry.load(resolved, store or LocalStore("."), cache, told)
    train = parsed["train"]
    assert train is not None
    return Splits(train, parsed["validation"], parsed["test"])


def _note_role(note: Callable[[str], None], role: str, line: str) -> None:
    note(f"{role} {line}")


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(count * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def split_rows(splits: Splits, data: DataSpec, seed: int) -> tuple[list[Any], list[Any]]:
    """(train rows, validation rows): the validation dataset's, else a seeded share of the
    training rows; index by index what `prepare_*` encodes into `Prepared.train` and `.val`."""
    rows = splits.train.rows
    if splits.validation is not None:
        return rows, splits.validation.rows
    train_idx, val_idx = split_indices(len(rows), data.val_fraction, seed)
    if not train_idx:
        raise DataError("the training split is empty; lower data.val_fraction")
    return [rows[i] for i in train_idx], [rows[i] for i in val_idx]


def _tokenizer(data: DataSpec, texts: Any) -> Tokenizer:
    cfg = data.tokenizer
    return train_tokenizer(
        cfg.kind,
        texts,
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        lowercase=cfg.lowercase,
    )


def _label_ids(labels: list[str], seen: set[str], split: str, what: str) -> dict[str, int]:
    index = {name: i for i, name in enumerate(labels)}
    unknown = seen - index.keys()
    if unknown:
        raise DataError(f"{split} {what} not seen in training: {sorted(unknown)[:5]}")
    return index


def _encoded(
    tokenizer: Tokenizer,
    labels: list[str],
    encode: Callable[[list[Any], str], SequenceExamples],
    train_rows: list[Any],
    val_rows: list[Any],
    test_rows: list[Any] | None,
) -> Prepared:
    """Every split encoded the same way (labels unseen in training are an error per split)."""
    test = encode(test_rows, "test") if test_rows is not None else None
    return Prepared(
        tokenizer, labels, encode(train_rows, "train"), encode(val_rows, "validation"), test
    )


def prepare_classification(
    data: DataSpec,
    seed: int,
    splits: Splits,
    tokenizer: Tokenizer | None = None,
    labels: list[str] | None = None,
) -> Prepared:
    """Split (seeded) unless validation data is given, train the tokenizer on the training
    split only (or reuse a checkpoint's), and encode each text with its label's id."""
    train_rows, val_rows = split_rows(splits, data, seed)
    test_rows = splits.test.rows if splits.test is not None else None
    tokenizer = tokenizer or _tokenizer(data, (r["text"] for r in train_rows))
    labels = labels or sorted({r["label"] for r in train_rows})
    if len(labels) < 2:
        raise DataError(f"classification needs at least 2 labels, found {len(labels)}")

    def encode(rows: list[Any], split: str) -> SequenceExamples:
        index = _label_ids(labels, {r["label"] for r in rows}, split, "labels")
        return SequenceExamples(
            [tokenizer.encode(r["text"], data.max_length) for r in rows],
            [index[r["label"]] for r in rows],
        )

    return _encoded(tokenizer, labels, encode, train_rows, val_rows, test_rows)


def prepare_tagging(
    data: DataSpec,
    seed: int,
    splits: Splits,
    tokenizer: Tokenizer | None = None,
    labels: list[str] | None = None,
) -> Prepared:
    """As for classification, with a whole-word vocabulary and a tag on each word's first
    piece (IGNORE on the others)."""
    train_rows, val_rows = split_rows(splits, data, seed)
    test_rows = splits.test.rows if splits.test is not None else None
    cfg = data.tokenizer
    tokenizer = tokenizer or WordTokenizer.train_whole(
        (r["tokens"] for r in train_rows), cfg.vocab_size, cfg.min_frequency, cfg.lowercase
    )
    labels = labels or sorted({t for r in train_rows for t in r["tags"]})

    def encode_tagged(rows: list[Any], split: str) -> SequenceExamples:
        index = _label_ids(labels, {t for r in rows for t in r["tags"]}, split, "tags")
        ids, targets = [], []
        for row in rows:
            # Truncated by the tokenizer, which keeps a pretrained model's [SEP] (word -1).
            pieces, words = tokenizer.encode_words(row["tokens"], data.max_length)
            first = [w >= 0 and (i == 0 or words[i - 1] != w) for i, w in enumerate(words)]
            ids.append(pieces)
            targets.append(
                [index[row["tags"][w]] if f else IGNORE for w, f in zip(words, first, strict=True)]
            )
        return SequenceExamples(ids, targets)

    return _encoded(tokenizer, labels, encode_tagged, train_rows, val_rows, test_rows)


def prepare_language_modeling(
    data: DataSpec,
    seed: int,
    splits: Splits,
    tokenizer: Tokenizer | None = None,
    labels: list[str] | None = None,
) -> Prepared:
    """One token stream in fixed-context windows (no labels). The first (1 - val_fraction) of the text trains, the rest validates (no shuffling:
    neighbouring windows would leak)."""
    text = splits.train.text or "\n".join(r["text"] for r in splits.train.rows)
    if splits.validation is not None:
        train_text = text
        val_text = splits.validation.text or "\n".join(r["text"] for r in splits.validation.rows)
    else:
        cut = int(len(text) * (1 - data.val_fraction))
        train_text, val_text = text[:cut], text[cut:]
    tokenizer = tokenizer or _tokenizer(data, [train_text])

    def stream(body: str) -> StreamExamples:
        # Running text: no per-text special tokens (a pretrained model's BOS once at most).
        ids = torch.tensor(tokenizer.encode_stream(body), dtype=torch.long)
        if len(ids) < 2:
            raise DataError("the text is too short for language modelling")
        return StreamExamples(ids, data.max_length)

    test = None
    if splits.test is not None:
        test = stream(splits.test.text or "\n".join(r["text"] for r in splits.test.rows))
    return Prepared(tokenizer, [], stream(train_text), stream(val_text), test)


def collate(ids: list[list[int]], targets: Sequence[Any]) -> Batch:
    """Right-pad to the longest sequence in this batch: tokens (B, T), lengths (B,), targets."""
    lengths = torch.tensor([len(seq) for seq in ids], dtype=torch.long)
    tokens = pad_right(ids)
    if targets and isinstance(targets[0], list):  # per-token targets (tagging)
        return tokens, lengths, pad_right(list(targets), IGNORE)
    return tokens, lengths, torch.tensor(list(targets), dtype=torch.long)


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


def shard(batch: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of one global batch: every world_size-th example, from `rank`.

    The global batch was cut from a length-sorted pool, so each shard keeps its lengths (and
    its padding); striding gives every rank a similar mix, so no rank waits on the others.
    A rank whose share is empty (a last batch smaller than the world) gets the first example,
    which the trainer weighs zero, so every rank still joins the gradient all-reduce.
    """
    return batch[rank::world_size] or batch[:1]


def rebatch(batches: list[list[int]], batch_size: int) -> list[list[int]]:
    """The examples of `batches`, in order, cut into batches of `batch_size`.

    Resuming mid-epoch with another global batch size (a different number of devices):
    the rest of the saved epoch order is re-cut, so no example is seen twice in the epoch.
    """
    flat = [i for batch in batches for i in batch]
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]


def prepare(
    task: str,
    data: DataSpec,
    seed: int,
    splits: Splits,
    tokenizer: Tokenizer | None = None,
    labels: list[str] | None = None,
) -> Prepared:
    """Encode `splits` for `task`, as its plug-in does."""
    from shared.registry import task_info

    return task_info(task).plugin().prepare(data, seed, splits, tokenizer, labels)
