"""Model registry: one encoder per architecture, one head and one task plug-in per task, one
forward contract, so the trainer never branches on the model or the task:

    forward(tokens (B, T) int64, lengths (B,) int64, targets | None) -> (logits, loss | None)

task.py        the task plug-in contract (prepare, build, targets, metrics, inference)
encoders.py    recurrent (rnn, gru, lstm, bilstm; packed) and transformer (masked; causal for
               LMs) encoders, and build_encoder
classifier.py  pooled (last / mean / max / attention) -> label logits (B, C); ClassificationTask
tagger.py      per-token tag scores (B, T, K), CRF or softmax; TaggingTask
lm.py          next-token logits (B, T, V), sampling; LanguageModelingTask
seq2seq.py     Seq2SeqTask: pairs, BLEU / chrF at each validation, translate, its report
seq2seq_models.py  the encoder-decoders' shared teacher-forced forward, and build_seq2seq
seq2seq_rnn.py     recurrent encoder -> attention decoder with input feeding
seq2seq_transformer.py  Transformer encoder-decoder, cached incremental decoding
attention.py   additive (Bahdanau) and multiplicative (Luong dot / general) attention
decoding.py    batched greedy and beam search over the models' incremental interface
crf.py         linear-chain CRF: forward algorithm and Viterbi
entity_metrics.py  entity-level precision / recall / F1, the CoNLL way (torch-free)
report.py      evaluation reports' numbers: confusion, per-class and per-entity scores,
               calibration, loss by position, BLEU and chrF (torch-free)
pretrained.py  Hugging Face base models (type pretrained): encoder, causal LM, tokenizer,
               freeze, LoRA; offline always
checkpoints.py one safetensors file per checkpoint: save / load (no pickle); the model's
               state without frozen base weights
statecodec.py  nested state dicts <-> safetensors tensors + JSON (no pickle anywhere)
onnx.py        ONNX export (dynamic batch and length) and its parity with PyTorch under
               onnxruntime (onnx and onnxruntime imported on use)
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from shared.registry import MODEL_TYPES, task_info
from shared.spec import ModelSpec
from shared.zoo.encoders import build_encoder


def build_model(
    spec: ModelSpec,
    task: str,
    vocab_size: int,
    num_classes: int,
    max_length: int,
    backbone: Path | None = None,
) -> nn.Module:
    """The model for a task: `num_classes` labels (classification) or tags (tagging);
    `backbone` is the base model's directory for type pretrained."""
    info = task_info(task)
    if spec.type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {spec.type!r}; valid: {', '.join(MODEL_TYPES)}")
    if spec.type not in info.model_types:
        raise ValueError(info.model_type_reason)
    return info.plugin().build(spec, vocab_size, num_classes, max_length, backbone=backbone)


__all__ = ["MODEL_TYPES", "build_encoder", "build_model"]
