"""Will it fit: parameters and peak training memory per device, from the spec alone.

Pure Python, so the API can answer at submit without importing torch. The parameter count
is exact (shared.spec.estimate_parameters; tests/test_estimate.py checks it against the
model built on the `meta` device). The peak is what one training step holds at its
worst, measured on CPU as the largest sum of live tensor bytes (tests check it within 30%):

    weights 4P + gradients 4P + AdamW state 8P          (fp32; P parameters)
    + activations kept for backward: batch_size x max_length x (bytes per token)
    (+ 2P for the bf16 weight copies autocast keeps on a GPU)

The bytes a token keeps are per architecture, fitted to measurements and shaped like
the layers (E embedding width, H hidden size, F feed-forward width, h heads, T max length,
V vocabulary). A GPU run under bf16 autocast keeps roughly 0.6 of the fp32 activations,
and its fused attention never stores the T x T scores. The estimate assumes the
vocabulary reaches data.tokenizer.vocab_size (character vocabularies: at most
CHAR_VOCAB_BOUND), and every batch is padded to max_length: an upper bound for real batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.registry import TASKS
from shared.spec import JobSpec, estimate_parameters

FLOAT = 4  # bytes of an fp32 value
# A character tokenizer's vocabulary is the distinct characters of the text: far below the
# default vocab_size bound for almost every corpus.
CHAR_VOCAB_BOUND = 512
# Per process, beside the tensors: the CUDA context and kernels on a GPU; the torch
# libraries and Python on a CPU.
OVERHEAD_BYTES = {"cuda": 1 << 30, "cpu": 600 << 20}
# bf16 autocast stores most activations at half width; norms and softmax stay fp32.
AUTOCAST_ACTIVATION_FACTOR = 0.6
# Floats each token keeps per recurrent layer and direction: a multiple of the hidden size,
# plus the layer's input (measured: the CPU kernels keep gates and states of every step;
# one direction runs as one dense call, two as packed sequences).
RECURRENT_FLOATS_PER_HIDDEN = {"rnn": 1.0, "gru": 8.0, "lstm": 17.0, "bilstm": 17.0}


def vocabulary_bound(spec: JobSpec) -> int:
    tokenizer = spec.data.tokenizer
    if tokenizer.kind == "char":
        return min(tokenizer.vocab_size, CHAR_VOCAB_BOUND)
    return tokenizer.vocab_size


def activation_bytes_per_token(spec: JobSpec, vocab: int, num_classes: int, gpu: bool) -> float:
    """Bytes one token of a training batch keeps for backward (fp32, before any autocast)."""
    model, task = spec.model, spec.task
    emb, hidden, ff, heads = (
        model.embedding_dim,
        model.hidden_size,
        model.dim_feedforward,
        model.nhead,
    )
    length = spec.data.max_length
    # Embedding output, its dropout and the dropout's mask (1 byte a value).
    floats = 2.0 * emb
    masks = 1.0 * emb
    if model.type == "transformer":
        # Per layer: norms, q/k/v, attention output and projection, residuals (13 E), the
        # feed-forward and its activation and dropout (3 F), and on a CPU the attention
        # scores, their softmax and dropout (3 h T). Then positions and the final norm.
        scores = 0 if gpu else 3 * heads * length
        floats += model.num_layers * (13 * emb + 3 * ff + scores) + 2 * emb
        width = emb
    else:
        directions = 2 if model.type == "bilstm" else 1
        per_hidden = RECURRENT_FLOATS_PER_HIDDEN[model.type]
        for layer in range(model.num_layers):
            inputs = emb if layer == 0 else hidden * directions
            floats += directions * (per_hidden * hidden + inputs)
            if layer > 0:  # dropout between layers: output and mask
                floats += hidden * directions
                masks += hidden * directions
        width = hidden * directions
    head_floats, head_masks = TASKS[task].head_activations(model, width, vocab, num_classes)
    floats += head_floats
    masks += head_masks
    return floats * FLOAT + masks


def pretrained_parameters(
    spec: JobSpec, base: Mapping[str, Any], num_classes: int
) -> tuple[int, int]:
    """(all, trainable) parameters of a pretrained model with the task's head: the base's
    exact count from its weights, the head's from its width; LoRA's adapters counted for
    peft's default targets (two projections a layer, hidden x hidden each)."""
    model = spec.model
    hidden, layers = int(base.get("hidden_size") or 0), int(base.get("num_layers") or 0)
    head = int(TASKS[spec.task].head_parameters(model, hidden, 0, num_classes))
    if spec.task == "language_modeling":
        head = 0  # the base model's own (usually tied) output layer
    total = int(base["parameters"]) + head
    if model.lora is not None:
        targets = len(model.lora.target_modules or ("query", "value"))
        adapters = layers * targets * model.lora.r * 2 * hidden
        return total + adapters, adapters + head
    if model.freeze == "encoder":
        return total, head
    if model.freeze == "embeddings":
        embeddings = (
            int(base.get("vocab_size") or 0) + int(base.get("max_positions") or 0)
        ) * hidden
        return total, max(head, total - embeddings)
    return total, total


def pretrained_activation_bytes_per_token(
    spec: JobSpec, base: Mapping[str, Any], gpu: bool
) -> float:
    """As `activation_bytes_per_token`, for a pretrained encoder of the base's sizes (the
    transformer's per-layer floats; with gradient checkpointing a layer keeps only its input,
    and one layer at a time its whole)."""
    emb = int(base.get("hidden_size") or 1)
    ff = int(base.get("intermediate_size") or 4 * emb)
    heads, layers = int(base.get("num_heads") or 1), int(base.get("num_layers") or 1)
    scores = 0 if gpu else 3 * heads * spec.data.max_length
    per_layer = 13 * emb + 3 * ff + scores
    kept = layers * emb + per_layer if spec.model.gradient_checkpointing else layers * per_layer
    floats = 3.0 * emb + kept
    if spec.task == "language_modeling":
        floats += 3 * int(base.get("vocab_size") or 0)
    return floats * FLOAT + emb


def estimate_training(
    spec: JobSpec,
    device_kind: str = "cpu",
    num_classes: int = 2,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Parameters and peak training bytes per device for `spec` on a `device_kind` device;
    `base` is the registry's summary of a pretrained model (its `parameters` exact)."""
    vocab = vocabulary_bound(spec)
    gpu = device_kind == "cuda"
    if base is not None:
        parameters, trainable = pretrained_parameters(spec, base, num_classes)
        per_token = pretrained_activation_bytes_per_token(spec, base, gpu)
        vocab = int(base.get("vocab_size") or 0)
    else:
        parameters = trainable = estimate_parameters(spec.model, vocab, num_classes, spec.task)
        per_token = activation_bytes_per_token(spec, vocab, num_classes, gpu)
    autocast = gpu and spec.training.precision != "fp32"
    tokens = spec.training.batch_size * spec.data.max_length
    activations = tokens * per_token
    if autocast:
        activations *= AUTOCAST_ACTIVATION_FACTOR
    weights, gradients, optimizer = FLOAT * parameters, FLOAT * trainable, 2 * FLOAT * trainable
    casts = 2 * parameters if autocast else 0
    peak = weights + gradients + optimizer + casts + int(activations)
    overhead = OVERHEAD_BYTES["cuda" if gpu else "cpu"]
    return {
        "parameters": parameters,
        "trainable_parameters": trainable,
        "device_kind": device_kind,
        "vocabulary_bound": vocab,
        "batch_size_per_device": spec.training.batch_size,
        "max_length": spec.data.max_length,
        "weights_bytes": weights,
        "gradients_bytes": gradients,
        "optimizer_bytes": optimizer,
        "activations_bytes": int(activations) + casts,
        "peak_tensor_bytes": peak,
        "overhead_bytes": overhead,
        "per_device_bytes": peak + overhead,
    }


def gib(size: float) -> str:
    return f"{size / (1 << 30):.2f} GiB"
