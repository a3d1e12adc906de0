"""Token ids -> contextual states. The task heads (classifier.py, tagger.py, lm.py) sit on these.

RecurrentEncoder    rnn / gru / lstm / bilstm: no pad ever reaches a state that is read
                    (one dense call for one direction, packed sequences for two)
TransformerEncoder  sinusoidal positions, pre-norm layers, key-padding mask; causal for LMs
Both return (states (B, T, D), padding mask (B, T) True at pads, last state or None) and
expose `width` = D; so does shared.zoo.pretrained's PretrainedEncoder (type pretrained).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from shared.data.text import PAD_ID
from shared.registry import MODEL_TYPES
from shared.spec import ModelSpec

_CELLS: dict[str, type[nn.RNN] | type[nn.GRU] | type[nn.LSTM]] = {
    "rnn": nn.RNN,
    "gru": nn.GRU,
    "lstm": nn.LSTM,
}


def pad_right(sequences: list[list[int]], value: int = PAD_ID) -> torch.Tensor:
    """(B, T) int64, each sequence followed by `value` up to the longest one."""
    width = max(len(seq) for seq in sequences)
    padded = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        padded[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return padded


def padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B, T) True where a position is padding."""
    steps = torch.arange(seq_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


class RecurrentEncoder(nn.Module):
    def __init__(
        self,
        cell: str,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        bidirectional: bool,
    ) -> None:
        super().__init__()
        self.directions = 2 if bidirectional else 1
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.width = hidden_size * self.directions
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

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, states: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(states (B, T, D) or None when not wanted, padding (B, T), last state per direction (B, D))."""
        batch, seq_len = tokens.shape
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        if self.directions == 1:
            # Right-padding only ever follows a sequence's real tokens, so running the padded
            # batch gives every real position exactly the state packing would; the states
            # computed over pads are never read (the last state is taken at each sequence's
            # true end, and heads mask pads). One dense call is about twice as fast as the
            # packed per-step loop on CPUs (oneDNN's fused kernel), and batches are bucketed
            # by length, so little is computed on pads.
            out, _ = self.rnn(x)  # (B, T, H)
            ends = (lengths.to(out.device) - 1).clamp_min(0)
            last = out[torch.arange(batch, device=out.device), ends]  # (B, H)
            return (out if states else None), padding_mask(lengths.to(tokens.device), seq_len), last
        # Both directions: the backward one would start on the pads, so pack.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        # Unpacking copies every state; a classifier reading only the last state skips it.
        padded = (
            pad_packed_sequence(out, batch_first=True, total_length=seq_len)[0] if states else None
        )
        if isinstance(hidden, tuple):  # LSTM: (h_n, c_n)
            hidden = hidden[0]
        # h_n: (layers * directions, B, H): the last layer's final state of each direction,
        # read at each sequence's true end (forward) and start (backward).
        last = hidden.view(self.num_layers, self.directions, batch, self.hidden_size)[-1]
        last = last.transpose(0, 1).reshape(batch, self.width)  # (B, D)
        return padded, padding_mask(lengths.to(tokens.device), seq_len), last


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


class TransformerEncoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        num_layers: int,
        dropout: float,
        max_length: int,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.width, self.causal = d_model, causal
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        # std 1/sqrt(d): after the sqrt(d) scale below, tokens and positions have the same
        # magnitude. (The default std 1 would scale tokens to ~sqrt(d) and drown the positions.)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()
        # Not a parameter and not saved: recomputed from the sizes.
        self.positions: torch.Tensor
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
        self.layers = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, states: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        seq_len = tokens.size(1)
        x = self.embedding(tokens) * math.sqrt(self.width) + self.positions[:seq_len]  # (B, T, C)
        padding = padding_mask(lengths.to(tokens.device), seq_len)  # (B, T)
        if self.causal:
            # Each position attends to itself and the past; right padding is never attended
            # by a real position, so no key-padding mask is needed.
            mask = nn.Transformer.generate_square_subsequent_mask(seq_len, device=tokens.device)
            hidden = self.layers(self.dropout(x), mask=mask, is_causal=True)
        else:
            hidden = self.layers(self.dropout(x), src_key_padding_mask=padding)
        return hidden, padding, None


def build_encoder(
    spec: ModelSpec, vocab_size: int, max_length: int, causal: bool, backbone: Path | None = None
) -> nn.Module:
    """The encoder `spec` names; type pretrained loads the base model in `backbone` (an
    encoder: causal language models are built whole by lm.py)."""
    if spec.type == "pretrained":
        from shared.zoo.pretrained import pretrained_encoder

        return pretrained_encoder(backbone, spec)
    if spec.type == "transformer":
        return TransformerEncoder(
            vocab_size,
            spec.embedding_dim,
            spec.nhead,
            spec.dim_feedforward,
            spec.num_layers,
            spec.dropout,
            max_length,
            causal=causal,
        )
    if spec.type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {spec.type!r}; valid: {', '.join(MODEL_TYPES)}")
    cell = "lstm" if spec.type == "bilstm" else spec.type
    return RecurrentEncoder(
        cell,
        vocab_size,
        spec.embedding_dim,
        spec.hidden_size,
        spec.num_layers,
        spec.dropout,
        bidirectional=spec.type == "bilstm",
    )
