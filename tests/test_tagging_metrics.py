"""Entity scores the conlleval way, on cases small enough to count by hand."""

import pytest

from shared.zoo.entity_metrics import entity_scores, token_accuracy


def overall(scores: dict) -> tuple[float, float, float]:
    return scores["precision"], scores["recall"], scores["f1"]


def test_perfect_prediction():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    scores = entity_scores(gold, gold)
    assert overall(scores) == (1.0, 1.0, 1.0)
    assert (scores["true_positives"], scores["predicted"], scores["gold"]) == (3, 3, 3)
    assert token_accuracy(gold, gold) == 1.0


def test_partly_overlapping_span_is_wrong():
    # Gold PER covers tokens 0-1; predicting only token 0 is a false positive and a miss.
    scores = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert overall(scores) == (0.0, 0.0, 0.0)
    assert (scores["true_positives"], scores["predicted"], scores["gold"]) == (0, 1, 1)
    # A span that runs one token too long is wrong too.
    scores = entity_scores([["B-PER", "O", "O"]], [["B-PER", "I-PER", "O"]])
    assert scores["true_positives"] == 0


def test_right_span_wrong_type_is_wrong():
    scores = entity_scores([["O", "B-LOC", "I-LOC"]], [["O", "B-ORG", "I-ORG"]])
    assert overall(scores) == (0.0, 0.0, 0.0)
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_inside_tag_after_o_starts_an_entity():
    # conlleval reads I-PER after O as the start of a PER entity, so this span is right.
    scores = entity_scores([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert overall(scores) == (1.0, 1.0, 1.0)
    # I-LOC after I-PER starts a new LOC entity: the PER entity ends after one token.
    scores = entity_scores([["B-PER", "I-PER"]], [["I-PER", "I-LOC"]])
    assert (scores["true_positives"], scores["predicted"], scores["gold"]) == (0, 2, 1)


def test_counts_are_micro_averaged_over_sentences():
    gold = [["B-PER"], ["B-LOC", "B-LOC", "B-LOC"]]
    predicted = [["B-PER"], ["B-ORG", "B-ORG", "B-ORG"]]
    scores = entity_scores(gold, predicted)
    # 1 right of 4 predicted and of 4 gold; averaging per sentence would give 0.5.
    assert overall(scores) == (0.25, 0.25, 0.25)


def test_hand_computed_case():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER 0-2, LOC 3
        ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"],  # ORG 0-3, PER 4
        ["O", "O", "B-LOC"],  # LOC 2
    ]
    predicted = [
        ["B-PER", "I-PER", "O", "B-ORG", "O"],  # PER right, ORG wrong type
        ["B-ORG", "I-ORG", "O", "O", "I-PER"],  # ORG span too short, PER right (I- after O)
        ["O", "O", "B-LOC"],  # LOC right
    ]
    scores = entity_scores(gold, predicted)
    assert (scores["true_positives"], scores["predicted"], scores["gold"]) == (3, 5, 5)
    assert overall(scores) == pytest.approx((0.6, 0.6, 0.6))
    assert scores["per_type"] == {
        "LOC": {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2},
    }
    assert list(scores["per_type"]) == ["LOC", "ORG", "PER"]
    # Tokens wrong: sentence 0 index 3; sentence 1 indexes 2 and 4.
    assert token_accuracy(gold, predicted) == pytest.approx(10 / 13)


def test_nothing_predicted_or_nothing_gold_scores_zero():
    scores = entity_scores([["B-PER", "O"]], [["O", "O"]])
    assert overall(scores) == (0.0, 0.0, 0.0)
    assert scores["per_type"]["PER"]["support"] == 1
    scores = entity_scores([["O", "O"]], [["B-PER", "O"]])
    assert overall(scores) == (0.0, 0.0, 0.0)
    scores = entity_scores([["O"]], [["O"]])
    assert overall(scores) == (0.0, 0.0, 0.0) and scores["per_type"] == {}
    assert token_accuracy([["O"]], [["O"]]) == 1.0
    assert token_accuracy([], []) == 0.0


def test_length_mismatch_names_the_sentence():
    gold = [["O", "B-PER"], ["B-LOC", "O", "O"]]
    predicted = [["O", "B-PER"], ["B-LOC", "O"]]
    message = "sentence 1: 3 gold tags but 2 predicted"
    with pytest.raises(ValueError, match=message):
        entity_scores(gold, predicted)
    with pytest.raises(ValueError, match=message):
        token_accuracy(gold, predicted)
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        entity_scores(gold, predicted[:1])
