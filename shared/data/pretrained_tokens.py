"""A pretrained base model's own tokenizer (its tokenizer.json), behind the interface of
shared.data.tokenization: the model's ids and the special tokens it puts around a text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import tokenizers

from shared.data.tokenization import Tokenizer


class PretrainedTokenizer(Tokenizer):
    """A base model's own `tokenizers.Tokenizer` (tokenizer.json): its ids, and the special
    tokens its post-processor puts around a text, which `encode` adds and truncation keeps
    ([CLS] ... [SEP] for BERT; none for GPT-2). `vocab_size` is the model's embedding rows.
    A language model's stream starts with the model's BOS, once."""

    kind = "pretrained"

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        vocab_size: int,
        bos_id: int | None = None,
        eos_id: int | None = None,
        unk_id: int | None = None,
    ) -> None:
        if (count := tokenizer.get_vocab_size(with_added_tokens=True)) > vocab_size:
            raise ValueError(f"the tokenizer has {count} ids but the model embeds {vocab_size}")
        tokenizer.no_truncation()  # we truncate, keeping the special tokens
        tokenizer.no_padding()  # the loader pads each batch; the attention mask marks pads
        tokenizer.encode_special_tokens = True  # a "[CLS]" typed in a text is text
        self.tokenizer, self._vocab_size = tokenizer, vocab_size
        self.bos_id, self.eos_id, self.unk_id = bos_id, eos_id, unk_id
        # A single text's post-processing is a fixed template: specials, the text, specials.
        probe = tokenizer.encode("a", add_special_tokens=True)
        text = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
        cut = (text[0], text[-1] + 1) if text else (len(probe.ids), len(probe.ids))
        self.prefix, self.suffix = probe.ids[: cut[0]], probe.ids[cut[1] :]
        # What an input that spells nothing encodes to (a byte-level model has no <unk>).
        self.nothing = next((i for i in (unk_id, bos_id, eos_id) if i is not None), 0)
        added = tokenizer.get_added_tokens_decoder().items()
        self._hidden = {bos_id, eos_id} | {i for i, t in added if t.special and i != unk_id}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def _room(self, max_length: int | None) -> int | None:
        """How many of a text's own ids fit in `max_length` beside the special tokens."""
        specials = len(self.prefix) + len(self.suffix)
        return None if max_length is None else max(max_length - specials, 0)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        ids = self.prefix + self._encode(text)[: self._room(max_length)] + self.suffix
        return ids[:max_length] or [self.nothing]

    def encode_stream(self, text: str) -> list[int]:
        return ([] if self.bos_id is None else [self.bos_id]) + self._encode(text) or [self.nothing]

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.encode(prompt) if prompt else self.encode_stream("")[:1]

    def encode_words(
        self, tokens: Sequence[str], max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        words: list[int] = []
        for i, token in enumerate(tokens):
            pieces = self._encode(token if i == 0 else " " + token) or [self.nothing]
            ids += pieces
            words += [i] * len(pieces)
        room = self._room(max_length)
        words = [-1] * len(self.prefix) + words[:room] + [-1] * len(self.suffix)
        return (self.prefix + ids[:room] + self.suffix)[:max_length], words[:max_length]

    def decode(self, ids: Iterable[int]) -> str:
        # Not skip_special_tokens: that would hide the unknown token too.
        return self.tokenizer.decode([i for i in ids if i not in self._hidden], False)

    def to_dict(self) -> dict[str, Any]:
        ids = {"bos_id": self.bos_id, "eos_id": self.eos_id, "unk_id": self.unk_id}
        json_str = self.tokenizer.to_str()
        return {"kind": self.kind, "tokenizer": json_str, "vocab_size": self._vocab_size, **ids}
