"""The exact trainable-parameter count of a model trained from scratch, from its spec alone
(no torch): the spec's size bound and the submit-time estimate read it, and tests check it
against the built model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.registry import RECURRENT_GATES, TASKS

if TYPE_CHECKING:
    from shared.spec import ModelSpec


def estimate_parameters(
    model: ModelSpec, vocab_size: int, num_classes: int, task: str = "classification"
) -> int:
    """Exact trainable-parameter count of the zoo's model for these sizes (no torch needed).

    `num_classes` is the label count (classification), tag count (tagging); unused for
    language modelling, whose head predicts the vocabulary.
    """
    emb, hidden, layers = model.embedding_dim, model.hidden_size, model.num_layers
    total = vocab_size * emb  # token embedding
    if model.type == "transformer":
        ff = model.dim_feedforward
        # attention in/out projections 4E^2+4E, feed-forward 2EF+F+E, two LayerNorms 4E
        total += layers * (4 * emb * emb + 2 * emb * ff + 9 * emb + ff)
        total += 2 * emb  # final LayerNorm (pre-norm encoder)
        width = emb
    else:
        gates = RECURRENT_GATES[model.type]
        directions = 2 if model.type == "bilstm" else 1
        for layer in range(layers):
            inputs = emb if layer == 0 else hidden * directions
            total += directions * gates * (inputs * hidden + hidden * hidden + 2 * hidden)
        width = hidden * directions
    return total + int(TASKS[task].head_parameters(model, width, vocab_size, num_classes))
