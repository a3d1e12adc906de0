"""Model registry: one encoder per architecture, one head per task, one forward contract,
so the trainer never branches on the model:

    forward(tokens (B, T) int64, lengths (B,) int64, targets | None) -> (logits, loss | None)

encoders.py    recurrent (rnn, gru, lstm, bilstm; packed) and transformer (masked; causal for LMs)
classifier.py  pooled (last / mean / max / attention) -> label logits (B, C)
tagger.py      per-token tag scores (B, T, K), CRF or softmax
lm.py          next-token logits (B, T, V), sampling
crf.py         linear-chain CRF: forward algorithm and Viterbi
"""

from __future__ import annotations

from torch import nn

from shared.registry import MODEL_TYPES, TASKS
from shared.spec import ModelSpec
from shared.zoo.classifier import Classifier
from shared.zoo.encoders import RecurrentEncoder, TransformerEncoder
from shared.zoo.lm import LanguageModel
from shared.zoo.tagger import Tagger


def build_encoder(spec: ModelSpec, vocab_size: int, max_length: int, causal: bool) -> nn.Module:
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


def build_model(
    spec: ModelSpec, task: str, vocab_size: int, num_classes: int, max_length: int
) -> nn.Module:
    """The model for a task: `num_classes` labels (classification) or tags (tagging)."""
    if task == "classification":
        encoder = build_encoder(spec, vocab_size, max_length, causal=False)
        pooling = "mean" if spec.type == "transformer" else spec.pooling
        return Classifier(encoder, num_classes, pooling, spec.dropout)
    if task == "tagging":
        return Tagger(
            build_encoder(spec, vocab_size, max_length, causal=False),
            num_classes,
            spec.crf,
            spec.dropout,
        )
    if task == "language_modeling":
        if spec.type == "bilstm":
            raise ValueError("a bidirectional model cannot be a language model")
        encoder = build_encoder(spec, vocab_size, max_length, causal=True)
        return LanguageModel(encoder, vocab_size, max_length)
    raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
