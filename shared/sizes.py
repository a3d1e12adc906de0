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


def seq2seq_decoder_parameters(model: ModelSpec, encoder_width: int, vocab_size: int) -> int:
    """Exact trainable parameters of a seq2seq model (shared.zoo.seq2seq_models) beyond the
    source embedding and encoder layers `estimate_parameters` counts: the decoder, its
    embedding (V + 2 rows: the target tokenizer's `vocab_size` ids, then BOS and EOS), the
    attention, the bridge and the output layer."""
    emb, hidden, layers = model.embedding_dim, model.hidden_size, model.num_layers
    target_vocab = vocab_size + 2
    # Shared: the source table grows by BOS and EOS and serves the decoder as well.
    total = 2 * emb if model.share_embeddings else target_vocab * emb
    if model.type == "transformer":
        ff = model.dim_feedforward
        # self- and cross-attention 2 * (4E^2+4E), feed-forward 2EF+F+E, three LayerNorms 6E
        total += layers * (8 * emb * emb + 2 * emb * ff + 15 * emb + ff)
        total += 2 * emb  # final LayerNorm
        width = emb
    else:
        if model.attention == "dot" and encoder_width != hidden:
            raise ValueError(
                f"dot attention needs the encoder's states ({encoder_width} wide) as wide as "
                f"the decoder's (hidden_size {hidden}); use general or additive attention"
            )
        gates = RECURRENT_GATES[model.type]
        for layer in range(layers):
            inputs = emb + hidden if layer == 0 else hidden  # input feeding: [y; h~]
            total += gates * (inputs * hidden + hidden * hidden + 2 * hidden)
        attention = {
            "additive": hidden * hidden + encoder_width * hidden + 2 * hidden,  # W_q, W_k + b, v
            "dot": 0,
            "general": encoder_width * hidden,
        }
        total += attention[model.attention]
        bridges = 2 if model.type in ("lstm", "bilstm") else 1  # an LSTM bridges h and c
        total += bridges * (encoder_width * hidden + hidden)
        total += (encoder_width + hidden) * hidden  # W_c, no bias
        width = hidden
    output_weight = 0 if model.tie_embeddings else width * target_vocab
    return total + output_weight + target_vocab
