"""Transformer encoder text classifier.

Sinusoidal positions, pre-norm encoder layers, and a key-padding mask so attention never
looks at pads; the pooled feature is the mean over real tokens only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shared.text import PAD_ID


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(length, width) table from "Attention Is All You Need", section 3.5."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    frequency = torch.exp(
        torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width)
    )
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class TransformerClassifier(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        num_layers: int,
        dropout: float,
        max_length: int,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.positions: torch.Tensor
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        # Not a parameter and not saved: recomputed from the sizes.
        self.register_buffer(
            "positions", sinusoidal_positions(max_length, d_model), persistent=False
        )
        layer = nn.TransformerEncoderLayer(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, num_classes)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        seq_len = tokens.size(1)
        x = self.embedding(tokens) * math.sqrt(self.d_model) + self.positions[:seq_len]  # (B, T, C)
        steps = torch.arange(seq_len, device=tokens.device)
        padding = steps.unsqueeze(0) >= lengths.to(tokens.device).unsqueeze(
            1
        )  # (B, T), True at pads
        hidden = self.encoder(self.dropout(x), src_key_padding_mask=padding)  # (B, T, C)
        keep = (~padding).unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, C)
        logits = self.head(self.dropout(pooled))
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss
