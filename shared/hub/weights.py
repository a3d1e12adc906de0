"""safetensors headers, read without the library: names, dtypes, shapes and byte ranges.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...}`, plus an
optional `"__metadata__"` of strings), then the tensors' bytes. The header is checked
against the file's size: every tensor's byte range must hold exactly shape x dtype bytes
and end inside the file. The parameter count is the sum of the shapes' products, exact.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared import safejson
from shared.hub.members import MemberReader, ModelArchiveError

MAX_HEADER_BYTES = 16 << 20
# Bits a value of each dtype takes (the sub-byte types are packed).
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}


@dataclass
class WeightFile:
    """One safetensors file's header: its tensors, their parameters and dtypes."""

    tensors: set[str] = field(default_factory=set)
    parameters: int = 0
    dtypes: set[str] = field(default_factory=set)


def read_header(reader: MemberReader, size: int) -> WeightFile:
    """Parse and check the header of a safetensors file of `size` bytes."""
    name = reader.name
    if size < 8:
        raise ModelArchiveError(f"is {size} bytes: too short for a safetensors header", name)
    (length,) = struct.unpack("<Q", reader.exactly(8))
    if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
        raise ModelArchiveError(
            f"declares a {length:,}-byte safetensors header; a header is 2 to "
            f"{MAX_HEADER_BYTES:,} bytes and fits in the file ({size:,} bytes)",
            name,
        )
    try:
        header = safejson.loads(reader.exactly(length))
    except ValueError as exc:
        raise ModelArchiveError(
            f"has a safetensors header that is not JSON ({exc})", name
        ) from None
    if not isinstance(header, dict):
        raise ModelArchiveError("has a safetensors header that is not a JSON object", name)
    found = WeightFile()
    data_bytes = size - 8 - length
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            continue
        found.parameters += _check_tensor(name, tensor, entry, data_bytes)
        found.tensors.add(tensor)
        found.dtypes.add(entry["dtype"])
    return found


def _check_tensor(name: str, tensor: str, entry: Any, data_bytes: int) -> int:
    """A tensor's parameter count, once its entry proves consistent with the file."""
    shown = tensor[:100]
    if not isinstance(entry, dict):
        raise ModelArchiveError(f"tensor {shown!r}: its header entry is not an object", name)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise ModelArchiveError(f"tensor {shown!r}: unknown dtype {str(dtype)[:20]!r}", name)
    if not (isinstance(shape, list) and all(_count(d) for d in shape)):
        raise ModelArchiveError(
            f"tensor {shown!r}: shape must be a list of whole numbers >= 0", name
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)):
        raise ModelArchiveError(f"tensor {shown!r}: data_offsets must be [begin, end]", name)
    begin, end = offsets
    values = math.prod(shape)
    expected = values * DTYPE_BITS[dtype]
    if expected % 8 or end - begin != expected // 8:
        raise ModelArchiveError(
            f"tensor {shown!r}: data_offsets [{begin}, {end}] hold {end - begin:,} bytes, but "
            f"shape {shape} of {dtype} needs {expected / 8:,g}",
            name,
        )
    if end > data_bytes:
        raise ModelArchiveError(
            f"tensor {shown!r}: data_offsets end at byte {end:,}, past the file's "
            f"{data_bytes:,} bytes of data",
            name,
        )
    return values


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def total_parameters(files: Iterable[WeightFile]) -> int:
    return sum(f.parameters for f in files)


def weights_dtype(files: Iterable[WeightFile]) -> str:
    """The weights' dtype ("F32", "BF16", ...), or "mixed" when they hold several. Integer
    and boolean tensors are buffers (BERT's position_ids), not weights: they count only
    when nothing else is there."""
    dtypes: set[str] = set().union(*(f.dtypes for f in files))
    floating = {d for d in dtypes if d.startswith(("F", "BF", "C"))}
    dtypes = floating or dtypes
    if not dtypes:
        return "none"
    return dtypes.pop() if len(dtypes) == 1 else "mixed"
