"""Transformer encoder-decoder ("Attention Is All You Need", pre-norm as in our encoder).

encoder  shared.zoo.encoders.TransformerEncoder (non-causal, key-padding mask)
decoder  embeddings * sqrt(d_model) + sinusoidal positions (as the encoder), `num_layers`
         pre-norm layers of causal self-attention, cross-attention over the encoder's states
         (pads masked) and a GELU feed-forward, a final LayerNorm, the output projection

Teacher forcing is one parallel pass under the causal mask. Decoding one token at a time
caches each layer's self-attention keys and values of the past positions (TransformerState)
and the cross-attention keys and values of the source (TransformerMemory), so step t costs
O(t) attention and no recomputation of the past.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.text import PAD_ID
from shared.spec import ModelSpec
from shared.zoo.encoders import TransformerEncoder, sinusoidal_positions
from shared.zoo.seq2seq_models import Seq2SeqModel

KeysValues = tuple[torch.Tensor, torch.Tensor]  # each (N, heads, length, head width)


@dataclass
class TransformerMemory:
    attend: torch.Tensor  # (N, 1, 1, S) True at real source tokens
    cross: list[KeysValues]  # per layer, the source's cross-attention keys and values


@dataclass
class TransformerState:
    past: list[KeysValues]  # per layer, the self-attention keys and values of positions < t
    position: int  # t, the same for every row (all advance together)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, nhead: int, dropout: float) -> None:
        super().__init__()
        self.nhead, self.dropout = nhead, dropout
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.nhead, width // self.nhead).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> KeysValues:
        keys, values = self.key_value(x).chunk(2, dim=-1)  # (N, L, C) each
        return self._heads(keys), self._heads(values)  # (N, h, L, C / h)

    def forward(
        self,
        x: torch.Tensor,
        keys_values: KeysValues,
        attend: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        query = self._heads(self.query(x))  # (N, h, T, C / h)
        mixed = F.scaled_dot_product_attention(
            query,
            *keys_values,
            attn_mask=attend,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )  # (N, h, T, C / h)
        return self.out(mixed.transpose(1, 2).flatten(2))  # (N, T, C)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadAttention(d_model, nhead, dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attention = MultiHeadAttention(d_model, nhead, dropout)
        self.feed_forward_norm = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, past: KeysValues | None, cross: KeysValues, attend: torch.Tensor
    ) -> tuple[torch.Tensor, KeysValues]:
        """x (N, T, C): all positions under the causal mask (past None) or the next position
        after `past`; returns the new x and the self-attention keys and values so far."""
        normed = self.self_norm(x)
        keys, values = self.self_attention.keys_values(normed)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        x = x + self.dropout(self.self_attention(normed, (keys, values), causal=past is None))
        x = x + self.dropout(self.cross_attention(self.cross_norm(x), cross, attend))
        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        return x, (keys, values)


class TransformerSeq2Seq(Seq2SeqModel):
    def __init__(
        self,
        model: ModelSpec,
        source_vocab: int,
        target_vocab: int,
        max_source_length: int,
        max_target_length: int,
        label_smoothing: float,
    ) -> None:
        super().__init__(target_vocab, max_source_length, max_target_length, label_smoothing)
        d_model = self.width = model.embedding_dim
        self.nhead = model.nhead
        self.encoder = TransformerEncoder(
            target_vocab if model.share_embeddings else source_vocab,
            d_model,
            model.nhead,
            model.dim_feedforward,
            model.num_layers,
            model.dropout,
            max_source_length,
        )
        self.embedding = self.encoder.embedding
        if not model.share_embeddings:
            self.embedding = nn.Embedding(target_vocab, d_model, padding_idx=PAD_ID)
            nn.init.normal_(self.embedding.weight, std=d_model**-0.5)  # as the encoder's
            with torch.no_grad():
                self.embedding.weight[PAD_ID].zero_()
        # Inputs are BOS and up to max_target_length tokens; not saved, recomputed from sizes.
        self.positions: torch.Tensor
        self.register_buffer(
            "positions", sinusoidal_positions(max_target_length + 1, d_model), persistent=False
        )
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, model.nhead, model.dim_feedforward, model.dropout)
            for _ in range(model.num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(model.dropout)
        self.output = nn.Linear(d_model, target_vocab)
        if model.tie_embeddings:
            self.output.weight = self.embedding.weight

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """(N, T) ids at positions start.. -> (N, T, C), scaled as the encoder scales."""
        positions = self.positions[start : start + tokens.size(1)]
        return self.dropout(self.embedding(tokens) * math.sqrt(self.width) + positions)

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor
    ) -> tuple[TransformerMemory, TransformerState]:
        states, padding, _ = self.encoder(src, src_lengths)  # (B, S, C), (B, S)
        layers = cast(list[DecoderLayer], list(self.layers))
        cross = [layer.cross_attention.keys_values(states) for layer in layers]
        memory = TransformerMemory(attend=(~padding)[:, None, None, :], cross=cross)
        empty = states.new_zeros(states.size(0), self.nhead, 0, self.width // self.nhead)
        return memory, TransformerState(past=[(empty, empty)] * len(self.layers), position=0)

    def _decode(
        self,
        x: torch.Tensor,
        past: list[KeysValues] | None,
        memory: TransformerMemory,
    ) -> tuple[torch.Tensor, list[KeysValues]]:
        present = []
        for index, layer in enumerate(self.layers):
            x, keys_values = layer(
                x, None if past is None else past[index], memory.cross[index], memory.attend
            )
            present.append(keys_values)
        return self.output(self.norm(x)), present  # (N, T, V)

    def teacher_forced(
        self, src: torch.Tensor, src_lengths: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        memory, _ = self.encode(src, src_lengths)
        # Right padding follows each target, so the causal mask alone keeps pads unread.
        logits, _ = self._decode(self._embed(inputs, 0), None, memory)
        return logits  # (B, T, V)

    def step(
        self, tokens: torch.Tensor, state: TransformerState, memory: TransformerMemory
    ) -> tuple[torch.Tensor, TransformerState]:
        x = self._embed(tokens.unsqueeze(1), state.position)  # (N, 1, C)
        logits, present = self._decode(x, state.past, memory)
        log_probs = torch.log_softmax(logits[:, 0].float(), dim=-1)  # (N, V)
        return log_probs, TransformerState(past=present, position=state.position + 1)
