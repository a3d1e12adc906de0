"""Sequence tagger: encoder states -> per-token tag scores, decoded with a CRF or argmax; the
tagging task's plug-in (tags per word, entity F1 the CoNLL way)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.examples import prepare_tagging
from shared.data.tokenization import Tokenizer
from shared.protocol import IGNORE_INDEX
from shared.spec import ModelSpec
from shared.zoo.crf import CRF
from shared.zoo.encoders import build_encoder, padding_mask
from shared.zoo.entity_metrics import entity_scores, token_accuracy
from shared.zoo.task import Evaluation, Task, pad_batch

IGNORE = IGNORE_INDEX  # target value at padding positions


class Tagger(nn.Module):
    def __init__(self, encoder: nn.Module, num_tags: int, crf: bool, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        width: int = encoder.width  # type: ignore[assignment]
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_tags)
        self.crf = CRF(num_tags) if crf else None

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, padding, _ = self.encoder(tokens, lengths)
        emissions = self.head(self.dropout(states))  # (B, T, K)
        if targets is None:
            return emissions, None
        if self.crf is not None:
            return emissions, self.crf.neg_log_likelihood(
                emissions, targets, ~padding, reduction="token_mean"
            )
        loss = F.cross_entropy(
            emissions.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE
        )
        return emissions, loss

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Tag ids per sequence, as long as each sequence (Viterbi with a CRF)."""
        emissions, _ = self(tokens, lengths)
        if self.crf is not None:
            return self.crf.decode(emissions, ~padding_mask(lengths, tokens.size(1)))
        best = emissions.argmax(-1).tolist()
        return [row[:n] for row, n in zip(best, lengths.tolist(), strict=True)]


class TaggingTask(Task):
    name = "tagging"
    # Entity F1 is not a sum over batches: every rank evaluates the whole set.
    shard_evaluation = False

    prepare_examples = staticmethod(prepare_tagging)

    def build(
        self, model: ModelSpec, vocab_size: int, num_labels: int, max_length: int
    ) -> nn.Module:
        encoder = build_encoder(model, vocab_size, max_length, causal=False)
        return Tagger(encoder, num_labels, model.crf, model.dropout)

    def evaluation(self, labels: list[str]) -> Evaluation:
        return _EntityScores(labels)

    def predict(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        labels: list[str],
        max_length: int,
        texts: list[str] | None,
        tokens: list[list[str]] | None,
    ) -> list[dict[str, Any]]:
        """A tag per word (the tag of its first piece); texts are split on whitespace."""
        sentences = tokens or [t.split() for t in texts or []]
        out: list[dict[str, Any]] = []
        for words in sentences:
            if not words:
                out.append({"tokens": [], "tags": []})
                continue
            pieces, index = tokenizer.encode_words(words)
            pieces, index = pieces[:max_length], index[:max_length]
            (path,) = model.predict(*pad_batch([pieces]))  # type: ignore[operator]
            tags = ["O"] * len(words)
            for position, word in enumerate(index):
                if position == 0 or index[position - 1] != word:
                    tags[word] = labels[path[position]]
            out.append({"tokens": words, "tags": tags})
        return out


class _EntityScores(Evaluation):
    """Decoded paths against the gold tags, on each word's first piece."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.gold: list[list[str]] = []
        self.predicted: list[list[str]] = []

    def add(
        self,
        model: nn.Module,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        paths = model.predict(tokens, lengths)  # type: ignore[operator]
        for path, target in zip(paths, targets.tolist(), strict=True):
            keep = [i for i, t in enumerate(target[: len(path)]) if t != IGNORE]
            self.gold.append([self.labels[target[i]] for i in keep])
            self.predicted.append([self.labels[path[i]] for i in keep])

    def finish(self, loss: float, sums: dict[str, float]) -> dict[str, float]:
        scores = entity_scores(self.gold, self.predicted)
        return {
            "f1": scores["f1"],
            "precision": scores["precision"],
            "recall": scores["recall"],
            "accuracy": token_accuracy(self.gold, self.predicted),
        }
