"""Recurrent encoder-decoder with attention and input feeding (Luong et al., 2015).

encoder  shared.zoo.encoders.RecurrentEncoder (rnn / gru / lstm / bilstm), run packed so each
         layer's final state is read at each source's true end (and start, backwards)
bridge   decoder layer l starts from tanh(W [encoder layer l's final state, both directions])
         (an LSTM bridges its cell state too, with its own W)
decoder  a unidirectional cell of the encoder's family (LSTM for bilstm), input
         [embedding(y_{t-1}); h~_{t-1}] (input feeding), attention of its top state h_t over the
         encoder's states, h~_t = tanh(W_c [context; h_t]), logits = output(dropout(h~_t))

Dot attention needs the decoder's width (hidden_size) to equal the encoder's, so a bilstm
(2 * hidden_size) refuses it with a ValueError; general and additive attention map the widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from shared.data.text import PAD_ID
from shared.spec import ModelSpec
from shared.zoo.attention import build_attention
from shared.zoo.encoders import RecurrentEncoder, padding_mask
from shared.zoo.seq2seq_models import Seq2SeqModel

_DECODER_CELLS: dict[str, type[nn.RNN] | type[nn.GRU] | type[nn.LSTM]] = {
    "rnn": nn.RNN,
    "gru": nn.GRU,
    "lstm": nn.LSTM,
    "bilstm": nn.LSTM,
}


@dataclass
class RecurrentMemory:
    states: torch.Tensor  # (N, S, D) encoder states
    padding: torch.Tensor  # (N, S) True at pads
    keys: torch.Tensor  # (N, S, A) the attention's prepared keys


@dataclass
class RecurrentState:
    # Batch-first, so decoding can select rows along dim 0 (the cell wants layers first).
    hidden: torch.Tensor  # (N, L, H)
    cell: torch.Tensor | None  # (N, L, H) LSTM only
    feed: torch.Tensor  # (N, H) the previous step's attentional vector h~


class RecurrentSeq2Seq(Seq2SeqModel):
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
        emb, hidden = model.embedding_dim, model.hidden_size
        self.encoder = RecurrentEncoder(
            "lstm" if model.type == "bilstm" else model.type,
            target_vocab if model.share_embeddings else source_vocab,
            emb,
            hidden,
            model.num_layers,
            model.dropout,
            bidirectional=model.type == "bilstm",
        )
        width = self.encoder.width
        self.embedding = (
            self.encoder.embedding
            if model.share_embeddings
            else nn.Embedding(target_vocab, emb, padding_idx=PAD_ID)
        )
        self.rnn = _DECODER_CELLS[model.type](
            emb + hidden,  # input feeding
            hidden,
            num_layers=model.num_layers,
            batch_first=True,
            dropout=model.dropout if model.num_layers > 1 else 0.0,  # between layers only
        )
        # A dot attention over a bilstm's states (twice hidden_size) is refused there.
        self.attention = build_attention(model.attention, hidden, width)
        self.bridge = nn.Linear(width, hidden)
        self.cell_bridge = nn.Linear(width, hidden) if isinstance(self.rnn, nn.LSTM) else None
        self.combine = nn.Linear(width + hidden, hidden, bias=False)  # W_c
        self.dropout = nn.Dropout(model.dropout)
        self.output = nn.Linear(hidden, target_vocab)
        if model.tie_embeddings:
            if emb != hidden:
                raise ValueError(
                    f"tie_embeddings needs embedding_dim ({emb}) equal to hidden_size ({hidden})"
                )
            self.output.weight = self.embedding.weight

    def _run_encoder(
        self, src: torch.Tensor, src_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(states (B, S, D), padding (B, S), final h (B, L, D), final c (B, L, D) or None).

        RecurrentEncoder.forward returns only the top layer's h; the bridge wants every
        layer's h and c, so this runs its modules packed (no pad reaches a final state)."""
        encoder = self.encoder
        batch, seq_len = src.shape
        x = encoder.dropout(encoder.embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(x, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = encoder.rnn(packed)
        states = pad_packed_sequence(out, batch_first=True, total_length=seq_len)[0]  # (B, S, D)
        h_n, c_n = final if isinstance(final, tuple) else (final, None)

        def by_layer(last: torch.Tensor) -> torch.Tensor:
            # (L * directions, B, H) -> (B, L, directions * H), forward direction first
            shape = (encoder.num_layers, encoder.directions, batch, encoder.hidden_size)
            return last.view(shape).permute(2, 0, 1, 3).reshape(batch, encoder.num_layers, -1)

        padding = padding_mask(src_lengths.to(src.device), seq_len)
        return states, padding, by_layer(h_n), None if c_n is None else by_layer(c_n)

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor
    ) -> tuple[RecurrentMemory, RecurrentState]:
        states, padding, h_n, c_n = self._run_encoder(src, src_lengths)
        memory = RecurrentMemory(states, padding, self.attention.prepare(states))
        cell = None
        if self.cell_bridge is not None and c_n is not None:
            cell = torch.tanh(self.cell_bridge(c_n))  # (B, L, H)
        hidden = torch.tanh(self.bridge(h_n))  # (B, L, H)
        feed = hidden.new_zeros(hidden.size(0), hidden.size(2))  # no h~ before the first step
        return memory, RecurrentState(hidden, cell, feed)

    def _advance(
        self, tokens: torch.Tensor, state: RecurrentState, memory: RecurrentMemory
    ) -> tuple[torch.Tensor, RecurrentState]:
        """One decoder step: (attentional vector h~ (N, H), the next state)."""
        x = torch.cat([self.dropout(self.embedding(tokens)), state.feed], dim=-1)  # (N, E + H)
        hidden = state.hidden.transpose(0, 1).contiguous()  # (L, N, H)
        if state.cell is None:
            out, hidden = self.rnn(x.unsqueeze(1), hidden)
            cell = None
        else:
            out, (hidden, cell) = self.rnn(
                x.unsqueeze(1), (hidden, state.cell.transpose(0, 1).contiguous())
            )
        top = out[:, 0]  # (N, H)
        context, _ = self.attention(top, memory.states, memory.padding, memory.keys)  # (N, D)
        attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, top], dim=-1))))
        cell = None if cell is None else cell.transpose(0, 1)
        return attentional, RecurrentState(hidden.transpose(0, 1), cell, attentional)

    def teacher_forced(
        self, src: torch.Tensor, src_lengths: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        memory, state = self.encode(src, src_lengths)
        # Step by step: input feeding makes step t read step t-1's attentional vector.
        attentional = []
        for position in range(inputs.size(1)):
            vector, state = self._advance(inputs[:, position], state, memory)
            attentional.append(vector)
        return self.output(torch.stack(attentional, dim=1))  # (B, T, V)

    def step(
        self, tokens: torch.Tensor, state: RecurrentState, memory: RecurrentMemory
    ) -> tuple[torch.Tensor, RecurrentState]:
        attentional, state = self._advance(tokens, state, memory)
        return torch.log_softmax(self.output(attentional).float(), dim=-1), state  # (N, V)
