"""Model registry. Every model honours one forward contract, so the trainer never branches:

    forward(tokens (B, T) int64, lengths (B,) int64, targets (B,) | None) -> (logits (B, C), loss | None)

recurrent.py    rnn, gru, lstm, bilstm: packed sequences, so pads never enter a recurrent state
transformer.py  transformer encoder: sinusoidal positions, key-padding mask, masked mean pooling
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from shared.spec import ModelSpec
from shared.zoo.recurrent import RecurrentClassifier
from shared.zoo.transformer import TransformerClassifier

Builder = Callable[[ModelSpec, int, int, int], nn.Module]


def _recurrent(cell: str, bidirectional: bool = False) -> Builder:
    def build(spec: ModelSpec, vocab_size: int, num_classes: int, max_length: int) -> nn.Module:
        return RecurrentClassifier(
            cell=cell,
            vocab_size=vocab_size,
            num_classes=num_classes,
            embedding_dim=spec.embedding_dim,
            hidden_size=spec.hidden_size,
            num_layers=spec.num_layers,
            dropout=spec.dropout,
            bidirectional=bidirectional,
        )

    return build


def _transformer(spec: ModelSpec, vocab_size: int, num_classes: int, max_length: int) -> nn.Module:
    return TransformerClassifier(
        vocab_size=vocab_size,
        num_classes=num_classes,
        d_model=spec.embedding_dim,
        nhead=spec.nhead,
        dim_feedforward=spec.dim_feedforward,
        num_layers=spec.num_layers,
        dropout=spec.dropout,
        max_length=max_length,
    )


REGISTRY: dict[str, Builder] = {
    "rnn": _recurrent("rnn"),
    "gru": _recurrent("gru"),
    "lstm": _recurrent("lstm"),
    "bilstm": _recurrent("lstm", bidirectional=True),
    "transformer": _transformer,
}


def build_model(spec: ModelSpec, vocab_size: int, num_classes: int, max_length: int) -> nn.Module:
    try:
        builder = REGISTRY[spec.type]
    except KeyError:
        raise ValueError(
            f"unknown model type {spec.type!r}; valid: {', '.join(REGISTRY)}"
        ) from None
    return builder(spec, vocab_size, num_classes, max_length)
