"""One checkpoint = one safetensors file: weights under `model.*`, and the optimizer,
scheduler, RNG and sampler state, tokenizer, labels and spec flattened beside them
(shared/statecodec.py). Loading never unpickles anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from shared.zoo.statecodec import flatten, unflatten

CHECKPOINT_FORMAT = "seqtrain.checkpoint/2"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tensors, document = flatten(state)
    save_file(tensors, str(path), metadata={"seqtrain": document})


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Everything in a checkpoint, from safetensors alone (no pickle)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if "seqtrain" not in metadata:
        raise ValueError(f"{path} is not a Seqtrain checkpoint")
    state: dict[str, Any] = unflatten(tensors, metadata["seqtrain"])
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
    return state
