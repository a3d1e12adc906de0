"""Sequence tagger: encoder states -> per-token tag scores, decoded with a CRF or argmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.protocol import IGNORE_INDEX
from shared.zoo.crf import CRF
from shared.zoo.encoders import padding_mask

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
