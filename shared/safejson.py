"""JSON from untrusted clients, bounded in nesting depth before it is decoded.

`json.loads` recurses once per level of nesting: a 10 KB document of 5,000 nested arrays
raises RecursionError instead of a ValueError. `loads` measures the depth first, in one
linear pass over the raw text (string literals removed, then the running count of open
brackets), and refuses anything deeper than `max_depth` with `JsonTooDeep`. Every other
problem is a ValueError, as from `json.loads`. Standard library only.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64

# A string literal, or an unterminated one running to the end: it always matches from a
# quote, so the scan stays linear whatever the text holds.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_OPEN, _CLOSE = b"[{", b"]}"
_KEEP = b"[]{}"
_DROP = bytes(b for b in range(256) if b not in _KEEP)
_STEP = [0] * 256
for _byte in _OPEN:
    _STEP[_byte] = 1
for _byte in _CLOSE:
    _STEP[_byte] = -1


class JsonTooDeep(ValueError):
    """The document nests arrays and objects deeper than the limit."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"nested deeper than {max_depth} levels of arrays and objects")
        self.max_depth = max_depth


def nesting_depth(raw: bytes) -> int:
    """The deepest run of open brackets outside string literals (exact for valid JSON,
    never below what a decoder would reach before it fails on invalid JSON)."""
    brackets = _STRING.sub(b"", raw).translate(None, _DROP)
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets))))


def check_depth(raw: bytes | str, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonTooDeep when `raw` nests deeper than `max_depth`."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    # Fast path: a document with few brackets cannot be deep (a job spec has about six).
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return
    if nesting_depth(data) > max_depth:
        raise JsonTooDeep(max_depth)


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` for untrusted text: JsonTooDeep past `max_depth`, else ValueError."""
    check_depth(raw, max_depth)
    try:
        return json.loads(raw)
    except RecursionError:  # not reachable after the scan; kept as a last line
        raise JsonTooDeep(max_depth) from None
