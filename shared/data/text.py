"""Tokenizer and vocabulary (pure Python; saved inside every checkpoint).

Ids 0 and 1 are reserved: <pad> = 0 never appears inside a sequence, <unk> = 1 stands for
every token outside the vocabulary. They are distinct so a model can tell "unknown word"
from "no word".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and single punctuation marks: "Isn't it great!" -> ["isn't", "it", "great", "!"]."""
    return _WORD.findall(text.lower() if lowercase else text)


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD, UNK):
            raise ValueError("a vocabulary starts with <pad>, <unk>")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        max_size: int,
        min_frequency: int = 1,
        lowercase: bool = True,
    ) -> Vocabulary:
        counts = Counter(tok for text in texts for tok in tokenize(text, lowercase))
        # Most frequent first; ties broken alphabetically so the vocabulary is deterministic.
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_frequency), key=lambda t: (-counts[t], t)
        )
        return cls((PAD, UNK, *ranked[:max_size]), lowercase)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, max_length: int) -> list[int]:
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        ids = [index.get(tok, UNK_ID) for tok in tokenize(text, self.lowercase)[:max_length]]
        return ids or [UNK_ID]  # an empty text still has one position to read

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids if i != PAD_ID]

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        return cls(tuple(data["tokens"]), bool(data["lowercase"]))
