"""Sequence tagger: encoder states -> per-token tag scores, decoded with a CRF or argmax; the
tagging task's plug-in (tags per word, entity F1 the CoNLL way).

A pretrained encoder splits words into sub-tokens and adds special tokens; its tagger is
word-level: each word's first sub-token carries the word's tag (a target other than IGNORE
marks it in training and evaluation; the tokenizer's word indexes do at prediction), and
the CRF runs over those first sub-tokens only, gathered into (B, W, K) word emissions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.examples import prepare_tagging
from shared.data.tokenization import Tokenizer
from shared.protocol import IGNORE_INDEX
from shared.spec import ModelSpec
from shared.zoo import report
from shared.zoo.crf import CRF
from shared.zoo.encoders import build_encoder, padding_mask
from shared.zoo.entity_metrics import entity_scores, token_accuracy
from shared.zoo.task import Evaluation, ReportSplit, Task, pad_batch

IGNORE = IGNORE_INDEX  # target value at padding positions


class Tagger(nn.Module):
    def __init__(
        self, encoder: nn.Module, num_tags: int, crf: bool, dropout: float, words: bool = False
    ) -> None:
        super().__init__()
        self.encoder = encoder
        width: int = encoder.width  # type: ignore[assignment]
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_tags)
        self.crf = CRF(num_tags) if crf else None
        # The CRF over each word's first sub-token (pretrained encoders), not every token.
        self.words = words

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, padding, _ = self.encoder(tokens, lengths)
        emissions = self.head(self.dropout(states))  # (B, T, K)
        if targets is None:
            return emissions, None
        if self.crf is not None and self.words:
            return emissions, self._word_loss(emissions, targets)
        if self.crf is not None:
            return emissions, self.crf.neg_log_likelihood(
                emissions, targets, ~padding, reduction="token_mean"
            )
        loss = F.cross_entropy(
            emissions.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE
        )
        return emissions, loss

    def _word_loss(self, emissions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The CRF's loss over the words (first sub-tokens), per word; rows without a word
        (truncated away) add nothing."""
        assert self.crf is not None
        positions, real = first_positions(targets != IGNORE)  # (B, W) each
        words = gather_words(emissions, positions)  # (B, W, K)
        tags = targets.gather(1, positions).masked_fill(~real, 0)  # (B, W)
        rows = real[:, 0]
        if not bool(rows.any()):
            return emissions.sum() * 0.0  # still a graph over every parameter, for DDP
        return self.crf.neg_log_likelihood(
            words[rows], tags[rows], real[rows], reduction="token_mean"
        )

    @torch.no_grad()
    def predict(
        self, tokens: torch.Tensor, lengths: torch.Tensor, first: torch.Tensor | None = None
    ) -> list[list[int]]:
        """Tag ids per sequence, as long as each sequence (Viterbi with a CRF). A word-level
        CRF decodes the words that `first` (B, T) marks (default: every real token) and puts
        each word's tag on its first sub-token; other positions get their argmax."""
        emissions, _ = self(tokens, lengths)
        real_tokens = ~padding_mask(lengths, tokens.size(1))
        if self.crf is not None and not self.words:
            return self.crf.decode(emissions, real_tokens)
        best = emissions.argmax(-1).tolist()
        if self.crf is not None:
            starts = real_tokens if first is None else first.to(real_tokens.device) & real_tokens
            positions, real = first_positions(starts)
            paths = self.crf.decode(gather_words(emissions, positions), real)
            for row, path in enumerate(paths):
                for position, tag in zip(positions[row].tolist(), path, strict=False):
                    best[row][position] = tag
        return [row[:n] for row, n in zip(best, lengths.tolist(), strict=True)]


def first_positions(first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each row's words start: positions (B, W) of the True places of `first` (B, T),
    in order and packed to the left, and which of them are real (B, W); W >= 1."""
    counts = first.sum(1)  # (B,)
    width = max(int(counts.max()), 1) if first.numel() else 1
    # A stable sort of "not first" brings the True places to the front, in order.
    order = torch.sort((~first).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    real = torch.arange(order.size(1), device=first.device) < counts.unsqueeze(1)
    return order, real


def gather_words(emissions: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, T, K) at `positions` (B, W) -> (B, W, K)."""
    index = positions.unsqueeze(-1).expand(-1, -1, emissions.size(-1))
    return emissions.gather(1, index)


class TaggingTask(Task):
    name = "tagging"
    # Entity F1 is not a sum over batches: every rank evaluates the whole set.
    shard_evaluation = False

    prepare_examples = staticmethod(prepare_tagging)

    def build(
        self,
        model: ModelSpec,
        vocab_size: int,
        num_labels: int,
        max_length: int,
        backbone: Path | None = None,
    ) -> nn.Module:
        encoder = build_encoder(model, vocab_size, max_length, causal=False, backbone=backbone)
        words = model.type == "pretrained"  # sub-tokens: the CRF runs over words
        return Tagger(encoder, num_labels, model.crf, model.dropout, words=words)

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
        """A tag per word (the tag of its first piece; "O" for words cut by max_length);
        texts are split on whitespace."""
        sentences = tokens or [t.split() for t in texts or []]
        out: list[dict[str, Any]] = []
        for words in sentences:
            if not words:
                out.append({"tokens": [], "tags": []})
                continue
            pieces, index = tokenizer.encode_words(words, max_length)
            first = [w >= 0 and (p == 0 or index[p - 1] != w) for p, w in enumerate(index)]
            (path,) = model.predict(*pad_batch([pieces]), torch.tensor([first]))  # type: ignore[operator]
            tags = ["O"] * len(words)
            for position, word in enumerate(index):
                if first[position]:
                    tags[word] = labels[path[position]]
            out.append({"tokens": words, "tags": tags})
        return out

    def report(
        self, model: nn.Module, tokenizer: Tokenizer, labels: list[str], split: ReportSplit
    ) -> dict[str, Any]:
        """Per-entity scores, tag confusion, missed and spurious entities, decoded as in
        evaluation (CRF Viterbi on each word's first piece)."""
        gold: list[list[str]] = []
        predicted: list[list[str]] = []
        words: list[list[str]] = []
        for indices, (tokens, lengths, targets) in split.batches():
            paths = model.predict(tokens, lengths, targets != IGNORE)  # type: ignore[operator]
            for index, path, target in zip(indices, paths, targets.tolist(), strict=True):
                keep = [i for i, t in enumerate(target[: len(path)]) if t != IGNORE]
                gold.append([labels[target[i]] for i in keep])
                predicted.append([labels[path[i]] for i in keep])
                # Words cut by max_length carry no target: the kept ones are the first words.
                words.append([str(w) for w in split.rows[index]["tokens"][: len(keep)]])
        return report.tagging_section(labels, gold, predicted, words)

    def report_summary(self, split: str, section: dict[str, Any]) -> dict[str, float]:
        return report.tagging_summary(split, section)


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
        indices: list[int],
    ) -> None:
        paths = model.predict(tokens, lengths, targets != IGNORE)  # type: ignore[operator]
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
