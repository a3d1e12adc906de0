"""One checkpoint = one safetensors file: weights under `model.*`, and the optimizer,
scheduler, RNG and sampler state, tokenizer, labels and spec flattened beside them
(shared/statecodec.py). Loading never unpickles anything.

`model_state` is the model's part: its state dict without frozen parameters (a pretrained
base model's own weights, under `freeze` or LoRA, which the checkpoint names by hash) and
with each tied parameter once; for a model trained from scratch it is the whole state dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

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


def _parameter_names(model: nn.Module) -> tuple[set[str], dict[str, str]]:
    """(names of frozen parameters, alias -> the first name of a parameter shared by several
    names: tied weights, such as a language model's output layer and its embeddings)."""
    frozen: set[str] = set()
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if not parameter.requires_grad:
            frozen.add(name)
        if id(parameter) in first:
            aliases[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    return frozen, aliases


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """What a checkpoint stores of `model`: trainable parameters (each once) and buffers."""
    frozen, aliases = _parameter_names(model)
    return {
        name: value
        for name, value in model.state_dict().items()
        if name not in frozen and name not in aliases
    }


def load_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load `model_state`'s tensors into `model` (built the same way, its frozen weights
    already loaded). Raises ValueError on a tensor the model lacks, or one the state lacks
    that is not a frozen parameter or an alias of a stored one."""
    frozen, aliases = _parameter_names(model)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another shape
        raise ValueError(f"the checkpoint does not fit this model: {error}") from error
    missing = [
        name
        for name in result.missing_keys
        if name not in frozen and not (name in aliases and aliases[name] in state)
    ]
    if result.unexpected_keys or missing:
        raise ValueError(
            "the checkpoint does not fit this model: "
            + (
                f"unexpected {sorted(result.unexpected_keys)[:5]} "
                if result.unexpected_keys
                else ""
            )
            + (f"missing {sorted(missing)[:5]}" if missing else "")
        )
