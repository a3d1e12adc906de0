"""Tokenizers a training job can ask for: word, char, bpe and wordpiece, behind one interface;
"pretrained" is a base model's own tokenizer (built by shared.zoo.pretrained, never trained).

    tok = train_tokenizer("bpe", texts, vocab_size=2000)
    ids = tok.encode("To be, or not to be", max_length=128)
    tok.decode(ids)                                # "to be, or not to be"
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))   # same ids

Every kind reserves the ids of shared/text.py: <pad> = 0 never appears in an encoding,
<unk> = 1 stands for whatever the vocabulary cannot spell, and an empty text still encodes
to [<unk>]. `vocab_size` counts every id, <pad> and <unk> included, as the `tokenizers`
library counts it (shared.data.text.Vocabulary's `max_size` counts only the learned tokens).
A tokenizer saves to a JSON-compatible dict (never pickle), so it rides in a checkpoint's
metadata; bpe, wordpiece and pretrained keep the `tokenizers` library's own JSON
(`Tokenizer.to_str()`); a pretrained one keeps its model's ids, not the reserved ones.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from shared.data.text import PAD, PAD_ID, UNK, UNK_ID, Vocabulary, tokenize

KINDS = ("word", "char", "bpe", "wordpiece")
SPECIAL_TOKENS = (PAD, UNK)  # in id order: trainers give special tokens the first ids


class Tokenizer(ABC):
    """Text <-> ids. Subclasses implement `_encode` (no truncation), `decode`, `vocab_size`
    and `to_dict`; encoding, truncation and word alignment are shared."""

    kind: str

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def _encode(self, text: str) -> list[int]:
        """All ids of `text`, possibly none."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`, skipping <pad>."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict that `tokenizer_from_dict` turns back into this tokenizer."""

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of `text`, cut to `max_length`; never empty (an empty text is [UNK_ID])."""
        return self._encode(text)[:max_length] or [UNK_ID]

    def encode_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Ids of pre-split words (CoNLL tokens, say); see `encode_words` for the alignment."""
        return self.encode_words(tokens)[0]

    def encode_stream(self, text: str) -> list[int]:
        """Ids of running text for a language model's token stream (never empty)."""
        return self.encode(text)

    def prompt_ids(self, prompt: str) -> list[int]:
        """Ids a generation starts from: the prompt's, or a newline's for an empty prompt."""
        return self.encode(prompt) if prompt else [self.encode("\n")[0]]

    def encode_words(
        self, tokens: Sequence[str], max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        """Ids of pre-split words (at most `max_length`) and, for each id, the index of the
        word it came from (-1 for a special token the model adds, such as [CLS]).

        A word may give several ids (subwords for bpe and wordpiece, characters for char,
        punctuation split off for word) and always gives at least one (<unk> when it spells
        nothing), so a tagger can label each word's first id and ignore the rest. Every
        word after the first is encoded with the space before it, as it appears in running
        text, so the ids equal `encode(" ".join(tokens))` for words without whitespace.
        """
        ids: list[int] = []
        word_index: list[int] = []
        for i, token in enumerate(tokens):
            pieces = self._encode(token if i == 0 else " " + token) or [UNK_ID]
            ids += pieces
            word_index += [i] * len(pieces)
        return ids[:max_length], word_index[:max_length]


# Unknown whole tokens keep their shape: a capitalised word the vocabulary never saw is
# still most likely a name. Rare training words (below min_frequency) map to these too, so
# the model learns what each shape means.
SHAPE_TOKENS = ("<unk:Aa>", "<unk:AA>", "<unk:aa>", "<unk:00>", "<unk:-->")


def word_shape(token: str) -> str:
    if any(c.isdigit() for c in token):
        return "<unk:00>"
    if token[:1].isupper():
        return "<unk:AA>" if token.isupper() and len(token) > 1 else "<unk:Aa>"
    if token[:1].islower():
        return "<unk:aa>"
    return "<unk:-->"


class WordTokenizer(Tokenizer):
    """Words and punctuation marks (shared.data.text.tokenize); decode joins them with spaces."""

    kind = "word"

    def __init__(self, vocab: Vocabulary, whole_tokens: bool = False) -> None:
        self.vocab = vocab
        # Whole tokens: pre-split input (CoNLL) maps one token to one id, never split further,
        # so a tagger's positions are exactly the words.
        self.whole_tokens = whole_tokens
        self._index = {token: i for i, token in enumerate(vocab.tokens)}

    @classmethod
    def train_whole(
        cls,
        token_lists: Iterable[Sequence[str]],
        vocab_size: int,
        min_frequency: int,
        lowercase: bool,
    ) -> WordTokenizer:
        """A vocabulary of whole pre-split tokens (most frequent first, ties alphabetical)."""
        counts: Counter[str] = Counter(
            t.lower() if lowercase else t for tokens in token_lists for t in tokens
        )
        ranked = sorted(
            (t for t, n in counts.items() if n >= min_frequency), key=lambda t: (-counts[t], t)
        )
        keep = ranked[: vocab_size - len(SPECIAL_TOKENS) - len(SHAPE_TOKENS)]
        return cls(
            Vocabulary((*SPECIAL_TOKENS, *SHAPE_TOKENS, *keep), lowercase), whole_tokens=True
        )

    def encode_words(
        self, tokens: Sequence[str], max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        if not self.whole_tokens:
            return super().encode_words(tokens, max_length)
        lower = self.vocab.lowercase
        ids = [
            self._index.get(t.lower() if lower else t) or self._index.get(word_shape(t), UNK_ID)
            for t in tokens[:max_length]
        ]
        return ids, list(range(len(ids)))

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool
    ) -> WordTokenizer:
        max_size = vocab_size - len(SPECIAL_TOKENS)
        return cls(Vocabulary.build(texts, max_size, min_frequency, lowercase))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode(self, text: str) -> list[int]:
        return [self._index.get(token, UNK_ID) for token in tokenize(text, self.vocab.lowercase)]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab.decode(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "whole_tokens": self.whole_tokens, **self.vocab.to_dict()}


class CharTokenizer(Tokenizer):
    """Single characters, whitespace included; decode joins them back without separators."""

    kind = "char"

    def __init__(self, tokens: Sequence[str], lowercase: bool = True) -> None:
        if tuple(tokens[:2]) != SPECIAL_TOKENS:
            raise ValueError("a vocabulary starts with <pad>, <unk>")
        self.tokens = tuple(tokens)
        self.lowercase = lowercase
        self._index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool
    ) -> CharTokenizer:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text.lower() if lowercase else text)
        # Most frequent first, ties alphabetical, as in Vocabulary.build.
        ranked = sorted(
            (c for c, n in counts.items() if n >= min_frequency), key=lambda c: (-counts[c], c)
        )
        return cls((*SPECIAL_TOKENS, *ranked[: vocab_size - len(SPECIAL_TOKENS)]), lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def _encode(self, text: str) -> list[int]:
        return [self._index.get(c, UNK_ID) for c in (text.lower() if self.lowercase else text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i != PAD_ID)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": list(self.tokens), "lowercase": self.lowercase}


class SubwordTokenizer(Tokenizer):
    """A trained `tokenizers.Tokenizer`: byte-pair encoding ("bpe") or WordPiece ("wordpiece").

    bpe pre-tokenizes with ByteLevel, which keeps every space inside the tokens ("Ġworld"),
    so decode(encode(text)) gives the normalized text back exactly; Whitespace would drop the
    spaces and decode "don't stop" as "don ' t stop". Its alphabet is the bytes seen in
    training, not all 256, so an unseen character is <unk> as in the other kinds (and a small
    vocab_size stays possible). wordpiece pre-tokenizes with Whitespace (words and
    punctuation, as BERT does) and decodes with the WordPiece decoder, which joins words
    with single spaces and glues punctuation back on ("sat ." -> "sat.").
    """

    def __init__(self, kind: str, tokenizer: tokenizers.Tokenizer) -> None:
        if [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] != [PAD_ID, UNK_ID]:
            raise ValueError(
                f"a {kind} tokenizer must give {PAD} id {PAD_ID} and {UNK} id {UNK_ID}"
            )
        # Spell a literal "<pad>" in the input as text: only we put ids 0 and 1 in a sequence.
        # (A setting of the Tokenizer object that to_str() does not save, hence set here.)
        tokenizer.encode_special_tokens = True
        self.kind = kind
        self.tokenizer = tokenizer

    @classmethod
    def train(
        cls,
        kind: str,
        texts: Iterable[str],
        vocab_size: int,
        min_frequency: int,
        lowercase: bool,
    ) -> SubwordTokenizer:
        texts = list(texts)  # read twice: for the alphabet, then by the trainer
        if kind == "bpe":
            tokenizer = tokenizers.Tokenizer(models.BPE(unk_token=UNK, fuse_unk=True))
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
        else:
            tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token=UNK))
            tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
            tokenizer.decoder = decoders.WordPiece()
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()

        # The trainers always keep the whole alphabet, even past vocab_size, and pick which
        # characters `limit_alphabet` drops by hash order when counts tie; we choose the
        # alphabet ourselves, most frequent first, ties by character.
        counts = _alphabet_counts(tokenizer, texts)
        ranked = sorted(counts, key=lambda c: (-counts[c], c))
        learned = vocab_size - len(SPECIAL_TOKENS)
        trainer: trainers.Trainer
        if kind == "bpe":
            alphabet = ranked[:learned]
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=list(SPECIAL_TOKENS),
                initial_alphabet=alphabet,
                limit_alphabet=len(alphabet),
                show_progress=False,
            )
        else:
            # The WordPiece trainer numbers the "##c" continuation tokens in hash-map order,
            # and those numbers break ties between merges, so one corpus trains different
            # vocabularies run to run (huggingface/tokenizers#1794). Listing every "##c" up
            # front as a special token numbers them in our order; each char costs 2 ids.
            alphabet = ranked[: learned // 2]
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=[*SPECIAL_TOKENS, *(f"##{c}" for c in alphabet)],
                initial_alphabet=alphabet,
                limit_alphabet=len(alphabet),
                show_progress=False,
            )
        tokenizer.train_from_iterator(texts, trainer)
        if kind == "wordpiece":
            tokenizer = _keep_special_tokens(tokenizer, SPECIAL_TOKENS)
        return cls(kind, tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        # Not skip_special_tokens: that would hide <unk> too.
        kept = [i for i in ids if i != PAD_ID]
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": self.tokenizer.to_str()}


def _alphabet_counts(tokenizer: tokenizers.Tokenizer, texts: list[str]) -> Counter[str]:
    """How often each character occurs after normalizing and pre-tokenizing (for ByteLevel,
    each byte's stand-in character), i.e. in the alphabet the trainer sees."""
    counts: Counter[str] = Counter()
    for text in texts:
        if tokenizer.normalizer is not None:
            text = tokenizer.normalizer.normalize_str(text)
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text):
            counts.update(word)
    return counts


def _keep_special_tokens(
    tokenizer: tokenizers.Tokenizer, keep: Sequence[str]
) -> tokenizers.Tokenizer:
    """The same tokenizer with only `keep` left as special tokens (the rest stay in the
    model's vocabulary as ordinary tokens)."""
    data = json.loads(tokenizer.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in keep]
    return tokenizers.Tokenizer.from_str(json.dumps(data))


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int = 1,
    lowercase: bool = True,
) -> Tokenizer:
    """Learn a tokenizer of `kind` from `texts` with at most `vocab_size` ids in all.

    min_frequency drops rarer words (word) or characters (char); for bpe and wordpiece it
    is the least count a merge needs (their alphabet is kept whole, within vocab_size).
    Training is deterministic: the same texts give the same tokenizer.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least 3 ({PAD}, {UNK} and one token)")
    if kind == "word":
        return WordTokenizer.train(texts, vocab_size, min_frequency, lowercase)
    if kind == "char":
        return CharTokenizer.train(texts, vocab_size, min_frequency, lowercase)
    return SubwordTokenizer.train(kind, texts, vocab_size, min_frequency, lowercase)


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """The tokenizer that `to_dict` saved. A dict without "kind" is a
    shared.data.text.Vocabulary's (checkpoints written before this module) and loads as "word"."""
    kind = data.get("kind", "word")
    if kind == "word":
        return WordTokenizer(Vocabulary.from_dict(data), bool(data.get("whole_tokens", False)))
    if kind == "char":
        return CharTokenizer(data["tokens"], bool(data["lowercase"]))
    if kind in ("bpe", "wordpiece"):
        return SubwordTokenizer(kind, tokenizers.Tokenizer.from_str(data["tokenizer"]))
    if kind == "pair":  # seq2seq: a tokenizer per side (shared.data.pairs)
        from shared.data.pairs import PairTokenizer

        return PairTokenizer.from_dict(data)
    if kind == "pretrained":  # a base model's own (shared.data.pretrained_tokens)
        from shared.data.pretrained_tokens import PretrainedTokenizer

        ids = (data.get(key) for key in ("bos_id", "eos_id", "unk_id"))
        backend = tokenizers.Tokenizer.from_str(data["tokenizer"])
        return PretrainedTokenizer(backend, int(data["vocab_size"]), *ids)
    raise ValueError(f"unknown tokenizer kind {kind!r}; valid kinds: {', '.join(KINDS)}")
