"""Nested training state <-> (tensors, JSON), so a whole checkpoint is one safetensors file.

Model weights, optimizer state, RNG states and plain Python values (epoch, vocabulary,
spec) are flattened: every tensor leaf becomes a named tensor, everything else stays in a
JSON document with a reference where each tensor was. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from typing import Any

import torch

_TENSOR_REF = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def flatten(state: Any) -> tuple[dict[str, torch.Tensor], str]:
    tensors: dict[str, torch.Tensor] = {}

    def join(path: str, key: object) -> str:
        return f"{path}.{key}" if path else str(key)

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().contiguous().cpu().clone()
            return {_TENSOR_REF: path}
        if isinstance(value, dict):
            if value and all(isinstance(k, int) for k in value):
                return {_INTKEYS: {str(k): walk(v, join(path, k)) for k, v in value.items()}}
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"unsupported dict keys at {path}")
            return {k: walk(v, join(path, k)) for k, v in value.items()}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v, join(path, i)) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, join(path, i)) for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {path}")

    document = walk(state, "")
    return tensors, json.dumps(document, allow_nan=True)


def unflatten(tensors: dict[str, torch.Tensor], document: str) -> Any:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_TENSOR_REF}:
                return tensors[value[_TENSOR_REF]]
            if set(value) == {_TUPLE}:
                return tuple(walk(v) for v in value[_TUPLE])
            if set(value) == {_INTKEYS}:
                return {int(k): walk(v) for k, v in value[_INTKEYS].items()}
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(json.loads(document))
