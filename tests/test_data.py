from pathlib import Path

import pytest
import torch

from shared.data.datasets import BUILTIN_DATASETS, load
from shared.data.examples import (
    DataError,
    Splits,
    batch_order,
    collate,
    load_splits,
    prepare,
    split_indices,
)
from shared.data.text import PAD_ID, UNK_ID
from shared.infra.storage import LocalStore
from shared.spec import DataSpec, JobSpec, TokenizerSpec

STORE = LocalStore(Path("."))


def as_job(data: DataSpec, task: str | None = None) -> JobSpec:
    if task is None:
        task = {"builtin:stories": "language_modeling", "builtin:entities": "tagging"}.get(
            data.dataset or "", "classification"
        )
    return JobSpec(name="t", task=task, data=data)


def test_builtin_datasets_parse_and_suit_their_task():
    sentiment = load(BUILTIN_DATASETS["sentiment"], STORE)
    texts = [r["text"] for r in sentiment.rows]
    labels = [r["label"] for r in sentiment.rows]
    assert len(texts) == len(set(texts)) >= 500 and set(labels) == {"positive", "negative"}
    assert min(labels.count("positive"), labels.count("negative")) > 0.4 * len(labels)
    stories = load(BUILTIN_DATASETS["stories"], STORE)
    assert stories.text and len(stories.text) > 50_000
    entities = load(BUILTIN_DATASETS["entities"], STORE)
    tags = {t for row in entities.rows for t in row["tags"]}
    assert {"B-PER", "I-PER", "B-LOC", "B-ORG", "O"} <= tags and len(entities.rows) == 600


def test_split_is_seeded_and_disjoint():
    train, val = split_indices(100, 0.2, seed=3)
    assert len(val) == 20 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert split_indices(100, 0.2, seed=3) == (train, val) != split_indices(100, 0.2, seed=4)


def test_tokenizer_is_trained_on_the_training_split_only():
    spec = DataSpec(val_fraction=0.5)
    splits = load_splits(as_job(spec), STORE)
    data = prepare("classification", spec, 0, splits)
    assert len(data.train) + len(data.val) == 800 and data.labels == ["negative", "positive"]
    train_text = {
        r["text"]
        for i, r in enumerate(splits.train.rows)
        if i in set(split_indices(800, 0.5, 0)[0])
    }
    vocabulary = set(data.tokenizer.to_dict()["tokens"])
    val_only = {
        w for r in splits.train.rows if r["text"] not in train_text for w in r["text"].split()
    }
    train_words = {w for t in train_text for w in t.split()}
    assert not ((val_only - train_words) & vocabulary)


def test_explicit_validation_split_and_char_tokenizer():
    spec = DataSpec(
        validation_dataset="builtin:sentiment", tokenizer=TokenizerSpec(kind="char", vocab_size=50)
    )
    data = prepare("classification", spec, 0, load_splits(as_job(spec), STORE))
    assert len(data.train) == len(data.val) == 800  # no hold-out when validation data is given
    assert data.tokenizer.kind == "char" and data.tokenizer.vocab_size <= 50
    assert all(UNK_ID != i != PAD_ID for seq in data.train.ids[:20] for i in seq[:3])


def test_unseen_validation_labels_are_refused():
    sentiment = load(BUILTIN_DATASETS["sentiment"], STORE)
    odd = type(sentiment)(
        format="tsv", rows=[{"text": "a b", "label": "neutral"}], columns=["text", "label"]
    )
    with pytest.raises(DataError, match="validation labels not seen in training: \\['neutral'\\]"):
        prepare("classification", DataSpec(), 0, Splits(sentiment, odd))


def test_batches_cover_every_example_once_and_bucket_by_length():
    lengths = [(i * 7919) % 50 + 1 for i in range(1000)]
    batches = batch_order(lengths, batch_size=32, seed=1)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert batch_order(lengths, 32, seed=1) == batches != batch_order(lengths, 32, seed=2)
    # Bucketing: padding inside a batch is far below what random batches would need.
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.2 * sum(lengths)


def test_collate_pads_right_with_pad_id():
    tokens, lengths, targets = collate([[5, 6, 7], [8]], [1, 0])
    assert tokens.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert lengths.tolist() == [3, 1] and targets.tolist() == [1, 0]


def test_language_model_windows_cover_the_stream_and_shift_per_epoch():
    spec = DataSpec(
        dataset="builtin:stories",
        max_length=32,
        tokenizer=TokenizerSpec(kind="char", vocab_size=60),
    )
    data = prepare("language_modeling", spec, 0, load_splits(as_job(spec), STORE))
    order_a = data.train.batch_order(8, seed=1)
    order_b = data.train.batch_order(8, seed=2)
    assert order_a != order_b and order_a == data.train.batch_order(8, seed=1)
    tokens, lengths, targets = data.train.collate(order_a[0])
    assert tokens.shape == targets.shape == (8, 32) and lengths.tolist() == [32] * 8
    assert torch.equal(tokens[:, 1:], targets[:, :-1])  # next-token targets
    text = load_splits(as_job(spec), STORE).train.text
    cut = int(len(text) * 0.9)  # the last 10% validates, in order
    assert (
        data.tokenizer.decode(data.val.collate([0])[0][0].tolist()) == text[cut : cut + 32].lower()
    )


def test_tagging_labels_the_first_piece_of_each_word():
    spec = DataSpec(
        dataset="builtin:entities", tokenizer=TokenizerSpec(kind="word", lowercase=False)
    )
    data = prepare("tagging", spec, 0, load_splits(as_job(spec), STORE))
    assert "B-PER" in data.labels and "O" in data.labels
    tokens, lengths, targets = data.train.collate([0, 1])
    assert tokens.shape == targets.shape
    assert (targets[tokens == PAD_ID] == -100).all()
