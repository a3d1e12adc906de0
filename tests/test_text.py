import pytest

from shared.data.text import PAD_ID, UNK_ID, Vocabulary, tokenize


def test_tokenize_words_and_punctuation():
    assert tokenize("Isn't it GREAT!") == ["isn't", "it", "great", "!"]
    assert tokenize("Isn't it GREAT!", lowercase=False) == ["Isn't", "it", "GREAT", "!"]


def test_pad_and_unknown_are_distinct_and_reserved():
    vocab = Vocabulary.build(["a b b c", "b c"], max_size=10)
    assert PAD_ID != UNK_ID
    assert vocab.tokens[:2] == ("<pad>", "<unk>")
    assert vocab.tokens[2:] == ("b", "c", "a")  # by frequency, ties alphabetical
    assert vocab.encode("b zebra a", max_length=10) == [2, UNK_ID, 4]
    assert PAD_ID not in vocab.encode("b zebra a", max_length=10)


def test_max_size_min_frequency_and_truncation():
    vocab = Vocabulary.build(["a a a b b c"], max_size=1, min_frequency=2)
    assert vocab.tokens == ("<pad>", "<unk>", "a")
    assert vocab.encode("a a a a", max_length=2) == [2, 2]
    assert vocab.encode("", max_length=5) == [UNK_ID]  # never an empty sequence


def test_round_trip_through_dict():
    vocab = Vocabulary.build(["x y z"], max_size=5, lowercase=False)
    again = Vocabulary.from_dict(vocab.to_dict())
    assert again == vocab and again.encode("x Z", 5) == vocab.encode("x Z", 5)
    assert vocab.decode(vocab.encode("x y", 5)) == ["x", "y"]


def test_rejects_vocab_without_specials():
    with pytest.raises(ValueError):
        Vocabulary(("a", "b"))
