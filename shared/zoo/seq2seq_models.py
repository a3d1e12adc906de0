"""The seq2seq models' shared contract and their builder.

Seq2SeqModel  the teacher-forced `forward(src, src_lengths, targets) -> (logits, loss)` and the
              target ids (BOS and EOS are the target vocabulary's last two ids); subclasses
              give the logits (`teacher_forced`) and the incremental interface decoding.py uses
build_seq2seq RecurrentSeq2Seq (seq2seq_rnn.py) for rnn / gru / lstm / bilstm,
              TransformerSeq2Seq (seq2seq_transformer.py) for transformer

A batch: src (B, S) right-padded with PAD_ID, src_lengths (B,) >= 1, targets (B, T) whose rows
are [BOS, y1, ..., yn, EOS] right-padded with IGNORE_INDEX.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.text import PAD_ID
from shared.protocol import IGNORE_INDEX
from shared.registry import RECURRENT_TYPES
from shared.spec import ModelSpec


class Seq2SeqModel(nn.Module):
    def __init__(
        self,
        target_vocab: int,
        max_source_length: int,
        max_target_length: int,
        label_smoothing: float,
    ) -> None:
        super().__init__()
        self.target_vocab = target_vocab
        self.bos_id, self.eos_id = target_vocab - 2, target_vocab - 1
        # What serving truncates a source to, and the longest translation.
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.label_smoothing = label_smoothing

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T-1, V), mean cross-entropy over the real labels); label smoothing
        only while training, so evaluation reports the plain loss."""
        if targets is None:
            raise ValueError(
                "a seq2seq model's forward needs targets (teacher forcing); translate with "
                "shared.zoo.decoding's greedy or beam_search"
            )
        inputs = targets[:, :-1].masked_fill(targets[:, :-1] == IGNORE_INDEX, PAD_ID)  # (B, T-1)
        labels = targets[:, 1:]  # (B, T-1)
        logits = self.teacher_forced(src, src_lengths, inputs)  # (B, T-1, V)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.label_smoothing if self.training else 0.0,
        )
        return logits, loss

    def teacher_forced(
        self, src: torch.Tensor, src_lengths: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, T, V) for decoder inputs (B, T) that start with BOS."""
        raise NotImplementedError

    # The incremental interface (see shared.zoo.decoding).
    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Any, Any]:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: Any, memory: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError


def build_seq2seq(
    model: ModelSpec,
    source_vocab: int,
    target_vocab: int,
    max_source_length: int,
    max_target_length: int,
    label_smoothing: float,
) -> Seq2SeqModel:
    """The encoder-decoder `model` names; its size is shared.sizes' estimate_parameters."""
    # Imported here: both architectures import this module for Seq2SeqModel.
    from shared.zoo.seq2seq_rnn import RecurrentSeq2Seq
    from shared.zoo.seq2seq_transformer import TransformerSeq2Seq

    if model.share_embeddings and source_vocab > target_vocab:
        raise ValueError(
            f"share_embeddings needs the source ids ({source_vocab}) within the target "
            f"table ({target_vocab})"
        )
    if model.type == "transformer":
        return TransformerSeq2Seq(
            model, source_vocab, target_vocab, max_source_length, max_target_length, label_smoothing
        )
    if model.type in RECURRENT_TYPES:
        return RecurrentSeq2Seq(
            model, source_vocab, target_vocab, max_source_length, max_target_length, label_smoothing
        )
    valid = ", ".join((*RECURRENT_TYPES, "transformer"))
    raise ValueError(f"seq2seq has no model type {model.type!r}; valid: {valid}")
