"""Text classifier: encoder states -> one pooled vector -> label logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.zoo.encoders import RecurrentEncoder


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
