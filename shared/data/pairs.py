"""Sequence-to-sequence data: text pairs -> a tokenizer per side (or one shared) -> encoded
pairs in length-bucketed batches.

    tokenizer = PairTokenizer.train(data.tokenizer, sources, targets)
    tokenizer.encode("ein Hund läuft")                  # source ids
    tokenizer.encode_target("a dog runs", 64)           # [BOS, ..., EOS]
    tokenizer.decode_target(ids)                        # "a dog runs" (BOS / EOS dropped)

The target side has two ids more than its tokenizer: BOS (= its vocab_size) starts every
decoder input and EOS (= vocab_size + 1) ends every target, so the model's output layer
has `target_vocab_size` rows. Rows are {"source", "target"} (shared.data.formats).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from shared.data.examples import (
    Batch,
    DataError,
    Prepared,
    Splits,
    batch_order,
    split_rows,
)
from shared.data.tokenization import Tokenizer, tokenizer_from_dict, train_tokenizer
from shared.protocol import IGNORE_INDEX
from shared.spec import DataSpec, TokenizerSpec
from shared.zoo.encoders import pad_right

# Bucketing key: source length first, then target length (both well under this).
_LENGTH_KEY = 1 << 13


class PairTokenizer(Tokenizer):
    """A source tokenizer and a target tokenizer (the same object when shared); `encode`,
    `vocab_size` and `decode`'s inverse are the source side's."""

    kind = "pair"

    def __init__(self, source: Tokenizer, target: Tokenizer) -> None:
        self.source, self.target = source, target
        self.shared = source is target
        self.bos_id, self.eos_id = target.vocab_size, target.vocab_size + 1

    @classmethod
    def train(
        cls, cfg: TokenizerSpec, sources: Iterable[str], targets: Iterable[str]
    ) -> PairTokenizer:
        """One tokenizer trained on both sides (shared), or one per side."""

        def trained(texts: Iterable[str]) -> Tokenizer:
            return train_tokenizer(
                cfg.kind,
                texts,
                vocab_size=cfg.vocab_size,
                min_frequency=cfg.min_frequency,
                lowercase=cfg.lowercase,
            )

        if cfg.shared:
            both = trained([*sources, *targets])
            return cls(both, both)
        return cls(trained(sources), trained(targets))

    @property
    def vocab_size(self) -> int:
        return self.source.vocab_size

    @property
    def target_vocab_size(self) -> int:
        """Rows of the decoder's output layer: the target tokenizer's ids, BOS and EOS."""
        return self.target.vocab_size + 2

    def _encode(self, text: str) -> list[int]:
        return self.source._encode(text)

    def encode_target(self, text: str, max_length: int | None = None) -> list[int]:
        """[BOS, the text's ids (at most `max_length`), EOS]."""
        return [self.bos_id, *self.target.encode(text, max_length), self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """The source text of `ids`."""
        return self.source.decode(ids)

    def decode_target(self, ids: Iterable[int]) -> str:
        """The detokenized target text of `ids`, BOS and EOS dropped."""
        return self.target.decode(i for i in ids if i < self.bos_id)

    def to_dict(self) -> dict[str, Any]:
        source = self.source.to_dict()
        return {
            "kind": self.kind,
            "source": source,
            "target": None if self.shared else self.target.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairTokenizer:
        source = tokenizer_from_dict(data["source"])
        target = source if data["target"] is None else tokenizer_from_dict(data["target"])
        return cls(source, target)


@dataclass(frozen=True)
class PairExamples:
    """Encoded pairs: source ids, target ids [BOS, ..., EOS], and the raw texts of both
    sides (evaluation scores hypotheses against the reference as written)."""

    sources: list[list[int]]
    targets: list[list[int]]
    source_texts: list[str]
    references: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    def batch_order(self, batch_size: int, seed: int | None) -> list[list[int]]:
        keys = [
            len(s) * _LENGTH_KEY + len(t) for s, t in zip(self.sources, self.targets, strict=True)
        ]
        return batch_order(keys, batch_size, seed)

    def collate(self, batch: list[int]) -> Batch:
        """src (B, S) padded with <pad>, src lengths (B,), targets (B, T) padded with IGNORE."""
        sources = [self.sources[i] for i in batch]
        lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)
        targets = pad_right([self.targets[i] for i in batch], IGNORE_INDEX)
        return pad_right(sources), lengths, targets


def encode_pairs(
    tokenizer: PairTokenizer, rows: list[dict[str, Any]], data: DataSpec
) -> PairExamples:
    max_source = data.max_source_length or data.max_length
    max_target = data.max_target_length or data.max_length
    return PairExamples(
        [tokenizer.encode(r["source"], max_source) for r in rows],
        [tokenizer.encode_target(r["target"], max_target) for r in rows],
        [r["source"] for r in rows],
        [r["target"] for r in rows],
    )


def prepare_seq2seq(
    data: DataSpec,
    seed: int,
    splits: Splits,
    tokenizer: Tokenizer | None = None,
    labels: list[str] | None = None,
) -> Prepared:
    """Split (seeded) unless validation data is given, train the tokenizers on the training
    pairs only (or reuse a checkpoint's), and encode every split the same way."""
    train_rows, val_rows = split_rows(splits, data, seed)
    for name, rows in (("training", train_rows), ("validation", val_rows)):
        if rows and "source" not in rows[0]:
            raise DataError(
                f"the {name} dataset has no source/target pairs; upload it with source_column "
                "and target_column"
            )
    if tokenizer is None:
        tokenizer = PairTokenizer.train(
            data.tokenizer, (r["source"] for r in train_rows), (r["target"] for r in train_rows)
        )
    if not isinstance(tokenizer, PairTokenizer):
        raise DataError(f"seq2seq needs a source/target tokenizer, not {tokenizer.kind}")
    test = None
    if splits.test is not None:
        test = encode_pairs(tokenizer, splits.test.rows, data)
    return Prepared(
        tokenizer,
        [],
        encode_pairs(tokenizer, train_rows, data),
        encode_pairs(tokenizer, val_rows, data),
        test,
    )
