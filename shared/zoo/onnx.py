"""ONNX export of a trained model, and its parity with PyTorch under onnxruntime.

    info = export_onnx(model, task, path, max_length)    # writes `path`, returns the I/O
    worst = check_parity(model, path, vocab_size, [(2, 7), (5, 13)])   # max |ONNX - torch|

The graph takes `tokens (B, T) int64` (right-padded with 0) and `lengths (B,) int64`, both
dynamic in batch and length, and returns the model's scores without loss or decoding:
classification `logits (B, C)`, tagging `emissions (B, T, K)` (a CRF's Viterbi decoding stays
outside the graph: its transitions are in the weights), language modelling `logits (B, T, V)`.

Exported with torch.onnx's dynamo exporter. A recurrent encoder is exported as one
single-layer, one-direction cell per layer and direction on the dense right-padded batch (the
backward direction on each sequence reversed within its length), which computes exactly what
packing does at real tokens; a model of type pretrained is not exported (NotExportable).
onnx and onnxruntime are imported only here, on use.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.zoo.encoders import RecurrentEncoder, TransformerEncoder, padding_mask

OPSET = 18
INPUTS = ("tokens", "lengths")
OUTPUTS = {"classification": "logits", "tagging": "emissions", "language_modeling": "logits"}
# Parity is checked at these (batch, length) shapes unless told otherwise.
PARITY_SHAPES = ((2, 7), (5, 13))
PARITY_TOLERANCE = 1e-4


def parity_shapes(max_length: int) -> tuple[tuple[int, int], ...]:
    """PARITY_SHAPES within the model's longest input (a transformer has no positions past it)."""
    return tuple((batch, min(seq_len, max_length)) for batch, seq_len in PARITY_SHAPES)


class NotExportable(ValueError):
    """The model has no ONNX export; the message says why."""


class _RecurrentCells(nn.Module):
    """A RecurrentEncoder as single-layer, one-direction cells (the same weights), so every
    call is a plain ONNX RNN / GRU / LSTM node with a dynamic length: the backward direction
    reads each sequence reversed within its length, so pads only ever follow real tokens; the
    states at pads are zeroed for two directions, as unpacking does."""

    def __init__(self, encoder: RecurrentEncoder) -> None:
        super().__init__()
        rnn = encoder.rnn
        self.embedding, self.width = encoder.embedding, encoder.width
        self.directions, self.hidden_size = encoder.directions, encoder.hidden_size
        self.cells = nn.ModuleList()
        for layer in range(encoder.num_layers):
            for direction in range(self.directions):
                suffix = f"l{layer}" + ("_reverse" if direction else "")
                inputs = rnn.input_size if layer == 0 else encoder.width
                cell = type(rnn)(inputs, rnn.hidden_size, batch_first=True)
                with torch.no_grad():
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        getattr(cell, f"{name}_l0").copy_(getattr(rnn, f"{name}_{suffix}"))
                self.cells.append(cell)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, states: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seq_len = tokens.size(1)
        padding = padding_mask(lengths, seq_len)  # (B, T)
        steps = torch.arange(seq_len, device=tokens.device).unsqueeze(0)  # (1, T)
        # Position t of a reversed row is position len-1-t of the row (pads stay in place).
        reverse = torch.where(padding, steps, lengths.unsqueeze(1) - 1 - steps)  # (B, T)
        x = self.embedding(tokens)  # (B, T, E)
        for layer in range(len(self.cells) // self.directions):
            forward = _run_cell(self.cells[layer * self.directions], x)  # (B, T, H)
            if self.directions == 1:
                x = forward
                continue
            backward = _run_cell(self.cells[layer * 2 + 1], _gather_steps(x, reverse))
            x = torch.cat([forward, _gather_steps(backward, reverse)], dim=-1)  # (B, T, 2H)
        ends = (lengths - 1).clamp_min(0)
        last = x[torch.arange(x.size(0), device=x.device), ends]  # (B, D)
        if self.directions == 2:
            # The backward direction ends at each sequence's first token.
            last = torch.cat([last[:, : self.hidden_size], x[:, 0, self.hidden_size :]], dim=-1)
            x = x.masked_fill(padding.unsqueeze(-1), 0.0)
        return x, padding, last


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) at time steps index (B, T) -> (B, T, D)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


class _Scores(nn.Module):
    """forward(tokens, lengths) -> the model's scores alone (no targets, no loss)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        scores, _ = self.model(tokens, lengths)
        return scores


def exportable(model: nn.Module) -> nn.Module:
    """`model` as the graph to export (a copy; `model` itself is untouched)."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, RecurrentEncoder | TransformerEncoder):
        raise NotExportable(
            "a model of type pretrained (a Hugging Face base model) has no ONNX export yet; "
            "the bundle holds its trained weights and spec"
        )
    graph = copy.deepcopy(model).eval()
    if isinstance(encoder, RecurrentEncoder):
        graph.encoder = _RecurrentCells(encoder)
    return _Scores(graph).eval()


# PyTorch's gate blocks in ONNX's order: GRU [r, z, n] -> [z, r, n], LSTM [i, f, g, o] ->
# [i, o, f, c]; an RNN has one block.
_ONNX_GATES = {"rnn": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}


@torch.library.custom_op("seqtrain::recurrent", mutates_args=())
def recurrent(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    cell: str,
) -> torch.Tensor:
    """One layer, one direction of nn.RNN (tanh), nn.GRU or nn.LSTM from a zero state over a
    batch-first x (B, T, E) -> states (B, T, H), as one opaque op: torch.export would otherwise
    decompose the cell into a loop unrolled over the example's time steps."""
    zeros = x.new_zeros(1, x.size(0), weight_hh.size(1))
    params = [weight_ih, weight_hh, bias_ih, bias_hh]
    if cell == "lstm":
        return torch.lstm(x, (zeros, zeros), params, True, 1, 0.0, False, False, True)[0]
    run = torch.gru if cell == "gru" else torch.rnn_tanh
    return run(x, zeros, params, True, 1, 0.0, False, False, True)[0]


@recurrent.register_fake
def _recurrent_shape(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    cell: str,
) -> torch.Tensor:
    return x.new_empty(x.size(0), x.size(1), weight_hh.size(1))


def _onnx_recurrent(
    x: Any, weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any, cell: str
) -> Any:
    """seqtrain::recurrent as one ONNX RNN, GRU or LSTM node (zero initial state)."""
    from onnxscript import opset18

    op: Any = opset18
    hidden = weight_hh.shape[1]

    def onnx_order(tensor: Any) -> Any:
        blocks = [
            op.Slice(tensor, [k * hidden], [(k + 1) * hidden], [0]) for k in _ONNX_GATES[cell]
        ]
        return op.Concat(*blocks, axis=0) if len(blocks) > 1 else blocks[0]

    inputs = (
        op.Transpose(x, perm=[1, 0, 2]),  # (T, B, E)
        op.Unsqueeze(onnx_order(weight_ih), [0]),  # (1, gates * H, E)
        op.Unsqueeze(onnx_order(weight_hh), [0]),  # (1, gates * H, H)
        op.Unsqueeze(op.Concat(onnx_order(bias_ih), onnx_order(bias_hh), axis=0), [0]),
    )
    if cell == "lstm":
        states, _, _ = op.LSTM(*inputs, hidden_size=hidden, direction="forward")
    elif cell == "gru":
        # PyTorch applies the reset gate after the recurrent linear map.
        states, _ = op.GRU(*inputs, hidden_size=hidden, direction="forward", linear_before_reset=1)
    else:
        states, _ = op.RNN(*inputs, hidden_size=hidden, direction="forward")
    return op.Transpose(op.Squeeze(states, [1]), perm=[1, 0, 2])  # (T, 1, B, H) -> (B, T, H)


def _run_cell(cell: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A single-layer, one-direction cell over x (B, T, E) -> states (B, T, H)."""
    kind = {"RNN_TANH": "rnn", "GRU": "gru", "LSTM": "lstm"}[str(cell.mode)]
    weights = [
        getattr(cell, f"{name}_l0") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    return recurrent(x, *weights, kind)


def export_onnx(model: nn.Module, task: str, path: Path, max_length: int) -> dict[str, Any]:
    """Write `model`'s ONNX graph to `path` (one file, weights inside); return its inputs,
    outputs and opset. Raises NotExportable for a model that has none."""
    import onnx

    graph = exportable(model)
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=max(max_length, 2))
    encoder: Any = model.encoder
    vocab_size = int(encoder.embedding.num_embeddings)
    example = _example_inputs(vocab_size, batch=2, seq_len=min(max_length, 5), seed=0)
    output = OUTPUTS[task]
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter's own deprecation and tracing notices say nothing about our model.
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=list(INPUTS),
            output_names=[output],
            dynamic_shapes={"tokens": {0: batch, 1: length}, "lengths": {0: batch}},
            custom_translation_table={torch.ops.seqtrain.recurrent.default: _onnx_recurrent},
            verbose=False,
        )
        assert program is not None
        program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    for value in proto.graph.input:
        if any(not dim.dim_param for dim in value.type.tensor_type.shape.dim):
            raise NotExportable(f"the export fixed the size of input {value.name!r}")
    _name_dynamic_dims(proto, task)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return {
        "opset": OPSET,
        "inputs": [_describe(value) for value in proto.graph.input],
        "outputs": [_describe(value) for value in proto.graph.output],
        "bytes": path.stat().st_size,
    }


def _name_dynamic_dims(proto: Any, task: str) -> None:
    """Name the output's batch (and length) dims: the exporter may leave the example's sizes
    there, which onnxruntime then warns about at every other shape."""
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    names = ["batch"] if task == "classification" else ["batch", "length"]
    for dim, name in zip(dims, names, strict=False):
        dim.ClearField("dim_value")
        dim.dim_param = name
    del proto.graph.value_info[:]  # shapes inferred for the example only


def _describe(value: Any) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    return {
        "name": value.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        "shape": [dim.dim_param or dim.dim_value for dim in tensor.shape.dim],
    }


def _example_inputs(
    vocab_size: int, batch: int, seq_len: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random right-padded tokens (B, T) and mixed lengths (B,): the first row full, the
    others from 1 to T."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, max(vocab_size, 3), (batch, seq_len), generator=generator)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    tokens = tokens.masked_fill(padding_mask(lengths, seq_len), 0)
    return tokens, lengths


def onnx_session(path: Path | str) -> Any:
    """An onnxruntime session on the CPU."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_parity(
    model: nn.Module,
    path: Path,
    vocab_size: int,
    shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES,
    seed: int = 0,
) -> float:
    """The largest absolute difference between the ONNX graph under onnxruntime and `model`
    in PyTorch, over every output value at each (batch, length) in `shapes` (mixed lengths)."""
    session = onnx_session(path)
    model.eval()
    worst = 0.0
    for index, (batch, seq_len) in enumerate(shapes):
        tokens, lengths = _example_inputs(vocab_size, batch, seq_len, seed + index)
        with torch.no_grad():
            expected, _ = model(tokens, lengths)
        (actual,) = session.run(None, {"tokens": tokens.numpy(), "lengths": lengths.numpy()})
        if tuple(actual.shape) != tuple(expected.shape):
            raise AssertionError(f"ONNX output {actual.shape} != PyTorch {tuple(expected.shape)}")
        worst = max(worst, float((torch.from_numpy(actual) - expected.float()).abs().max()))
    return worst
