import pytest

from shared.datasets import DatasetError, load_rows, text_label_pairs
from shared.spec import DataSpec
from shared.text import PAD_ID
from worker.data import batch_order, collate, prepare_classification, split_indices


def test_builtin_dataset_is_balanced_and_unique():
    texts, labels = text_label_pairs(load_rows("builtin:sentiment"), "text", "label")
    assert len(texts) == len(set(texts)) >= 500
    assert set(labels) == {"positive", "negative"}
    assert min(labels.count("positive"), labels.count("negative")) > 0.4 * len(labels)


def test_missing_column_is_named():
    with pytest.raises(DatasetError, match="no column 'review'"):
        text_label_pairs(load_rows("builtin:sentiment"), "review", "label")


def test_split_is_seeded_and_disjoint():
    train, val = split_indices(100, 0.2, seed=3)
    assert len(val) == 20 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert split_indices(100, 0.2, seed=3) == (train, val) != split_indices(100, 0.2, seed=4)


def test_vocabulary_comes_from_the_training_split_only():
    data = prepare_classification(DataSpec(val_fraction=0.5), seed=0)
    assert len(data.train) + len(data.val) == 800
    assert data.labels == ["negative", "positive"]


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
