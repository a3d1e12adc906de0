"""RNN / GRU / LSTM / BiLSTM text classifier over packed sequences.

Packing means the recurrence stops at each sequence's true length, so the final hidden
state is read after the last real token, never after padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from shared.text import PAD_ID

_CELLS: dict[str, type[nn.RNN] | type[nn.GRU] | type[nn.LSTM]] = {
    "rnn": nn.RNN,
    "gru": nn.GRU,
    "lstm": nn.LSTM,
}


class RecurrentClassifier(nn.Module):
    def __init__(
        self,
        cell: str,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        bidirectional: bool,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.rnn = _CELLS[cell](
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,  # between layers only
            bidirectional=bidirectional,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = tokens.size(0)
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # LSTM returns (h_n, c_n)
            hidden = hidden[0]
        # h_n: (layers * directions, B, H) -> last layer, every direction -> (B, directions * H)
        last = hidden.view(self.num_layers, self.directions, batch, self.hidden_size)[-1]
        features = last.transpose(0, 1).reshape(batch, self.directions * self.hidden_size)
        logits = self.head(self.dropout(features))  # (B, C)
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss
