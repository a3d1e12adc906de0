"""Text classifier: encoder states -> one pooled vector -> label logits; the classification
task's plug-in (labels, accuracy). A pretrained encoder pools its first token (`cls`) or
the mean, max or attention over real tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.examples import prepare_classification
from shared.data.tokenization import Tokenizer
from shared.spec import ModelSpec
from shared.zoo import report
from shared.zoo.encoders import RecurrentEncoder, build_encoder
from shared.zoo.task import (
    INFERENCE_BATCH,
    Evaluation,
    InferenceInputError,
    ReportSplit,
    Task,
    pad_batch,
)


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int, pooling: str, dropout: float) -> None:
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        width: int = encoder.width  # type: ignore[assignment]
        self.attention = nn.Linear(width, 1) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def pool(
        self, states: torch.Tensor, padding: torch.Tensor, last: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, T, D) -> (B, D), never reading a pad."""
        if self.pooling == "last" and last is not None:
            return last
        if self.pooling == "cls":
            return states[:, 0]  # the first token: [CLS] for BERT-family encoders
        keep = (~padding).unsqueeze(-1)  # (B, T, 1)
        if self.pooling == "max":
            return states.masked_fill(~keep, float("-inf")).amax(1)
        if self.attention is not None:
            scores = self.attention(states).masked_fill(~keep, float("-inf"))  # (B, T, 1)
            return (torch.softmax(scores, dim=1) * states).sum(1)
        keep_f = keep.to(states.dtype)
        return (states * keep_f).sum(1) / keep_f.sum(1).clamp_min(1.0)  # mean

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        wants_states = self.pooling != "last" or not isinstance(self.encoder, RecurrentEncoder)
        states, padding, last = self.encoder(tokens, lengths, states=wants_states)
        logits = self.head(self.dropout(self.pool(states, padding, last)))  # (B, C)
        loss = F.cross_entropy(logits.float(), targets) if targets is not None else None
        return logits, loss

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, C) class probabilities."""
        logits, _ = self(tokens, lengths)
        return torch.softmax(logits.float(), dim=-1)


class ClassificationTask(Task):
    name = "classification"
    train_count_keys = ("correct",)

    prepare_examples = staticmethod(prepare_classification)

    def build(
        self,
        model: ModelSpec,
        vocab_size: int,
        num_labels: int,
        max_length: int,
        backbone: Path | None = None,
    ) -> nn.Module:
        encoder = build_encoder(model, vocab_size, max_length, causal=False, backbone=backbone)
        # A transformer has no last state to pool: a scratch one always takes the mean over
        # real tokens, a pretrained one the mean unless the spec names another pooling.
        pooling = model.pooling
        if model.type == "transformer" or (model.type == "pretrained" and pooling == "last"):
            pooling = "mean"
        return Classifier(encoder, num_labels, pooling, model.dropout)

    def count_targets(self, targets: torch.Tensor) -> int:
        return len(targets)

    def train_counts(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, int]:
        return {"correct": int((logits.argmax(-1) == targets).sum())}

    def train_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        return {"train/accuracy": totals["correct"] / max(totals["weight"], 1)}

    def evaluation(self, labels: list[str]) -> Evaluation:
        return _Accuracy()

    def predict(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        labels: list[str],
        max_length: int,
        texts: list[str] | None,
        tokens: list[list[str]] | None,
    ) -> list[dict[str, Any]]:
        """Each text's label and every label's probability."""
        if texts is None:
            raise InferenceInputError("texts", "required for classification")
        out: list[dict[str, Any]] = []
        for start in range(0, len(texts), INFERENCE_BATCH):
            ids = [tokenizer.encode(t, max_length) for t in texts[start : start + INFERENCE_BATCH]]
            probs = model.predict(*pad_batch(ids))  # type: ignore[operator]  # (B, C)
            for row in probs.tolist():
                best = max(range(len(row)), key=row.__getitem__)
                out.append(
                    {
                        "label": labels[best],
                        "probabilities": {
                            lab: round(p, 6) for lab, p in zip(labels, row, strict=True)
                        },
                    }
                )
        return out

    def report(
        self, model: nn.Module, tokenizer: Tokenizer, labels: list[str], split: ReportSplit
    ) -> dict[str, Any]:
        """Confusion, per-class scores, calibration and mistakes, from the probabilities
        `predict` serves."""
        gold: list[int] = []
        probabilities: list[list[float]] = []
        texts: list[str] = []
        for indices, (tokens, lengths, targets) in split.batches():
            probabilities.extend(model.predict(tokens, lengths).tolist())  # type: ignore[operator]
            gold.extend(targets.tolist())
            texts.extend(str(split.rows[i]["text"]) for i in indices)
        return report.classification_section(labels, gold, probabilities, texts)

    def report_summary(self, split: str, section: dict[str, Any]) -> dict[str, float]:
        return report.classification_summary(split, section)


class _Accuracy(Evaluation):
    def __init__(self) -> None:
        self.correct = 0

    def add(
        self,
        model: nn.Module,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
        indices: list[int],
    ) -> None:
        self.correct += int((logits.argmax(-1) == targets).sum())

    def sums(self) -> dict[str, float]:
        return {"correct": self.correct}

    def finish(self, loss: float, sums: dict[str, float]) -> dict[str, float]:
        return {"accuracy": int(sums["correct"]) / max(int(sums["weight"]), 1)}
