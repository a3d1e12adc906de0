import json
from pathlib import Path

import pytest
import tokenizers
from tokenizers import models

from shared.data.text import PAD_ID, UNK_ID, Vocabulary, tokenize
from shared.data.tokenization import (
    KINDS,
    Tokenizer,
    WordTokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# No "z", "q", "x" and no character outside ASCII: the unknown-handling tests rely on it.
CORPUS = [
    "The cat sat on the mat.",
    "The dog sat on the log!",
    "Don't the cats like dogs?",
    "A cat, a dog, a log; the mat is warm.",
    "Cats and dogs sat, then the dogs ran home.",
    "The warm cat liked the dog's mat.",
    "The cat\tsat.\nThe dog ran.",
] * 3
KNOWN = ["The cat sat on the mat.", "the dogs ran home", "Then the cats like dogs?"]


def normalized(kind: str, text: str) -> str:
    """What decode(encode(text)) gives back for in-vocabulary text."""
    if kind == "word":
        return " ".join(tokenize(text))
    if kind == "wordpiece":
        return " ".join(text.lower().split())
    return text.lower()


def train(kind: str, vocab_size: int = 200, min_frequency: int = 1, lowercase: bool = True):
    return train_tokenizer(
        kind, CORPUS, vocab_size=vocab_size, min_frequency=min_frequency, lowercase=lowercase
    )


@pytest.fixture(scope="module", params=KINDS)
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    return train(request.param)


def test_pad_and_unknown_are_distinct_reserved_and_absent_from_known_text(tok):
    assert PAD_ID == 0 and UNK_ID == 1
    assert tok.decode([UNK_ID]) == "<unk>"
    for text in [*KNOWN, *CORPUS]:
        ids = tok.encode(text)
        assert PAD_ID not in ids and UNK_ID not in ids, text
    # A literal "<pad>" in the input is text, never the padding id.
    assert PAD_ID not in tok.encode("<pad> <unk> the cat")


def test_unknown_word_or_character_is_unk(tok):
    if tok.kind == "word":
        assert tok.encode("the zebra sat") == [*tok.encode("the"), UNK_ID, *tok.encode("sat")]
    else:  # an unseen character, alone and inside a word
        assert tok.encode("€") == [UNK_ID]
        assert UNK_ID in tok.encode("the €cat sat")
    assert UNK_ID in tok.encode("the quiz")


def test_empty_text_is_one_unknown(tok):
    assert tok.encode("") == [UNK_ID]
    assert tok.encode("", max_length=4) == [UNK_ID]


@pytest.mark.parametrize("text", KNOWN)
def test_decode_inverts_encode_on_known_text(tok, text):
    assert tok.decode(tok.encode(text)) == normalized(tok.kind, text)


def test_decode_skips_pad(tok):
    ids = tok.encode(KNOWN[0])
    assert tok.decode([PAD_ID, *ids, PAD_ID, PAD_ID]) == tok.decode(ids)


@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_whitespace_round_trip(kind):
    tok = train(kind)
    text = "The  cat\tsat\non the mat."
    expected = "the cat sat on the mat." if kind == "wordpiece" else text.lower()
    assert tok.decode(tok.encode(text)) == expected


def test_wordpiece_decode_spaces_apostrophes():
    # Whitespace pre-tokenizes "don't" as "don", "'", "t"; the WordPiece decoder glues only
    # . , ? ! back onto the word before, so an apostrophe comes back with spaces around it.
    tok = train("wordpiece")
    assert tok.decode(tok.encode("Don't the dogs?")) == "don ' t the dogs?"


def test_max_length_truncates(tok):
    text = " ".join(CORPUS)
    full = tok.encode(text)
    assert len(full) > 10
    assert tok.encode(text, max_length=10) == full[:10]
    assert tok.encode(text, max_length=None) == full


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("vocab_size", [3, 8, 20, 40])
def test_vocab_size_is_a_cap(kind, vocab_size):
    tok = train(kind, vocab_size)
    assert tok.vocab_size <= vocab_size
    assert max(i for text in CORPUS for i in tok.encode(text)) < tok.vocab_size


@pytest.mark.parametrize("kind", KINDS)
def test_large_vocab_size_learns_more(kind):
    assert train(kind, 8).vocab_size < train(kind, 60).vocab_size <= 60


@pytest.mark.parametrize("kind", KINDS)
def test_min_frequency_shrinks_the_vocabulary(kind):
    assert train(kind, min_frequency=1000).vocab_size < train(kind).vocab_size
    if kind in ("word", "char"):  # nothing is that frequent: all unknown
        tok = train(kind, min_frequency=1000)
        assert tok.vocab_size == 2 and set(tok.encode("the cat")) == {UNK_ID}


@pytest.mark.parametrize("kind", KINDS)
def test_lowercase_false_keeps_case(kind):
    tok = train(kind, lowercase=False)
    assert tok.encode("The") != tok.encode("the")
    assert tok.decode(tok.encode("The cat")) == "The cat"


def test_to_dict_survives_json_and_gives_the_same_ids(tok):
    data = json.loads(json.dumps(tok.to_dict()))
    assert data["kind"] == tok.kind
    again = tokenizer_from_dict(data)
    assert (again.kind, again.vocab_size) == (tok.kind, tok.vocab_size)
    for text in [*KNOWN, "the zebra €", "<pad> cat", "", "Cats, dogs; mats!"]:
        assert again.encode(text) == tok.encode(text), text
        assert again.decode(tok.encode(text)) == tok.decode(tok.encode(text))
    assert again.to_dict() == tok.to_dict()


@pytest.mark.parametrize("kind", KINDS)
def test_training_is_deterministic(kind):
    # Five runs, not two: the tokenizers library's WordPiece trainer alone varies by hash
    # order from one run to the next, and we work around it.
    first, *others = [train(kind, 60) for _ in range(5)]
    assert all(other.to_dict() == first.to_dict() for other in others)
    text = "Cats and dogs sat on the warm log."
    assert all(other.encode(text) == first.encode(text) for other in others)


def test_encode_words_aligns_subwords_with_words():
    tok = train("bpe", 60)
    words = ["The", "cats", "sat", "", "homeland", "home."]
    ids, word_index = tok.encode_words(words)
    assert len(ids) == len(word_index) > len(words)  # some words split into subwords
    assert word_index == sorted(word_index) and set(word_index) == set(range(len(words)))
    assert ids == tok.encode_tokens(words)
    pieces = [
        tok.decode([i for i, w in zip(ids, word_index, strict=True) if w == n]) for n in range(6)
    ]
    assert pieces == ["the", " cats", " sat", " ", " homeland", " home."]


@pytest.mark.parametrize("kind", KINDS)
def test_encode_words_matches_encoding_the_joined_text(kind):
    tok = train(kind)
    words = ["Don't", "the", "cats", "like", "dogs", "?"]
    ids, word_index = tok.encode_words(words)
    assert ids == tok.encode(" ".join(words)) == tok.encode_tokens(words)
    assert len(word_index) == len(ids) and set(word_index) == set(range(len(words)))
    assert tok.encode_words(["", "cat"])[0][0] == UNK_ID  # a word that spells nothing
    assert tok.encode_words([]) == ([], [])


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="word, char, bpe, wordpiece"):
        train_tokenizer("sentencepiece", CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="valid kinds"):
        tokenizer_from_dict({"kind": "sentencepiece"})
    with pytest.raises(ValueError, match="at least 3"):
        train_tokenizer("bpe", CORPUS, vocab_size=2)


def test_rejects_a_subword_tokenizer_without_reserved_ids():
    swapped = tokenizers.Tokenizer(models.WordLevel({"<unk>": 0, "<pad>": 1}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="<pad> id 0"):
        tokenizer_from_dict({"kind": "bpe", "tokenizer": swapped.to_str()})


def test_loads_a_shared_text_vocabulary_dict():
    vocab = Vocabulary.build(CORPUS, max_size=20)
    tok = tokenizer_from_dict(vocab.to_dict())  # as checkpoints saved it before kinds
    assert isinstance(tok, WordTokenizer)
    for text in [*KNOWN, "the zebra"]:
        assert tok.encode(text) == vocab.encode(text, max_length=100)


@pytest.mark.skipif(
    not (DATASETS / "tinyshakespeare" / "input.txt").exists(),
    reason=f"{DATASETS / 'tinyshakespeare' / 'input.txt'} absent (shared data sets not mounted)",
)
def test_bpe_on_tiny_shakespeare():
    text = (DATASETS / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:200_000]
    tok = train_tokenizer("bpe", [text], vocab_size=2000)
    assert tok.vocab_size == 2000
    lines = [line for line in text.splitlines() if line][::500][:12]
    for line in lines:
        ids = tok.encode(line)
        assert UNK_ID not in ids and PAD_ID not in ids
        assert tok.decode(ids) == line.lower()
    assert len(tok.encode(text)) < len(text) / 3  # merges learned: > 3 characters a token
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    for line in lines:
        assert again.encode(line) == tok.encode(line)


def test_whole_token_vocabulary_keeps_the_shape_of_unknown_words():
    from shared.data.tokenization import SHAPE_TOKENS, WordTokenizer

    tok = WordTokenizer.train_whole([["Paris", "is", "big"], ["Paris", "is", "old"]], 50, 2, False)
    ids, index = tok.encode_words(["Paris", "is", "Oslo", "NATO", "2026", "huge", "--"])
    shapes = [tok.vocab.tokens[i] for i in ids[2:]]
    assert shapes == ["<unk:Aa>", "<unk:AA>", "<unk:00>", "<unk:aa>", "<unk:-->"]
    assert index == list(range(7)) and set(SHAPE_TOKENS) <= set(tok.vocab.tokens)
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.encode_words(["Paris", "Oslo"]) == tok.encode_words(["Paris", "Oslo"])
