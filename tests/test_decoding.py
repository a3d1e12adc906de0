"""Greedy and beam search: on a hand-made bigram "model" whose answers are worked out here,
and on the real architectures (beam 1 is greedy, a batch decodes as its sentences alone)."""

import math
from dataclasses import dataclass

import pytest
import torch

from shared.data.text import PAD_ID
from shared.protocol import IGNORE_INDEX
from shared.spec import ModelSpec
from shared.zoo.decoding import beam_search, gnmt_penalty, greedy, reorder
from shared.zoo.seq2seq_models import build_seq2seq

A, B, C = 2, 3, 4  # the bigram model's tokens; 0 is PAD, 1 UNK
BOS, EOS = 5, 6


class Bigram:
    """The incremental interface with next-token probabilities fixed by the previous token
    (the source is ignored): probabilities[previous] maps token -> probability."""

    bos_id, eos_id = BOS, EOS

    def __init__(self, probabilities: dict[int, dict[int, float]], max_target_length=20):
        self.max_target_length = max_target_length
        self.table = torch.full((7, 7), float("-inf"))
        for previous, following in probabilities.items():
            for token, probability in following.items():
                self.table[previous, token] = math.log(probability)

    def encode(self, src, src_lengths):
        return src_lengths.clone(), None  # memory: any per-row tensor; no state

    def step(self, tokens, state, memory):
        assert tokens.shape == memory.shape  # rows stay aligned with the memory
        return self.table[tokens], state

    def log_prob(self, ids):
        previous, total = BOS, 0.0
        for token in [*ids, EOS]:
            total += float(self.table[previous, token])
            previous = token
        return total


def decode_one(model, beam_size=2, alpha=0.0, limit=10):
    src, lengths, limits = torch.ones(1, 1, dtype=torch.long), torch.ones(1), torch.tensor([limit])
    ids, scores = beam_search(model, src, lengths, beam_size, alpha, limits)
    return ids[0], scores[0]


def test_beam_finds_what_greedy_misses():
    # Greedy takes A (0.6), then A keeps spreading its mass; B then EOS has 0.4 * 0.9.
    model = Bigram({BOS: {A: 0.6, B: 0.4}, A: {A: 0.4, C: 0.3, EOS: 0.3}, B: {EOS: 0.9, A: 0.1}})
    src, lengths = torch.ones(1, 1, dtype=torch.long), torch.ones(1)
    greedy_ids = greedy(model, src, lengths, torch.tensor([10]))[0]
    assert greedy_ids == [A] * 10
    ids, score = decode_one(model, beam_size=2)
    assert ids == [B]
    assert score == pytest.approx(math.log(0.4 * 0.9))
    assert score > model.log_prob(greedy_ids)


def test_length_penalty_favours_longer_translations():
    # [] ends with 0.4; [A] with 0.6 * 0.55 = 0.33: better only once normalised by length.
    model = Bigram({BOS: {A: 0.6, EOS: 0.4}, A: {A: 0.45, EOS: 0.55}})
    assert decode_one(model, alpha=0.0) == ([], pytest.approx(math.log(0.4)))
    ids, score = decode_one(model, alpha=2.0)
    assert ids == [A]
    assert score == pytest.approx(math.log(0.33) / ((5 + 2) / 6) ** 2)
    assert gnmt_penalty(2, 2.0) == pytest.approx((7 / 6) ** 2)


def test_eos_stops_and_is_not_returned():
    model = Bigram({BOS: {A: 0.9, EOS: 0.1}, A: {C: 0.8, EOS: 0.2}, C: {EOS: 0.7, A: 0.3}})
    src, lengths = torch.ones(2, 1, dtype=torch.long), torch.ones(2)
    assert greedy(model, src, lengths, torch.tensor([10, 10])) == [[A, C], [A, C]]
    assert decode_one(model, beam_size=3)[0] == [A, C]


def test_max_lengths_are_respected_per_sentence():
    model = Bigram({BOS: {A: 0.99, EOS: 0.01}, A: {A: 0.99, EOS: 0.01}}, max_target_length=6)
    src, lengths = torch.ones(4, 1, dtype=torch.long), torch.ones(4)
    limits = torch.tensor([3, 0, 9, 1])  # 9: beyond the model's longest translation (6)
    assert greedy(model, src, lengths, limits) == [[A] * 3, [], [A] * 6, [A]]
    # A strong length penalty makes the longest hypothesis the best: each stops at its limit.
    ids, scores = beam_search(model, src, lengths, 2, 3.0, limits)
    assert ids == [[A] * 3, [], [A] * 6, [A]]
    # At the limit the hypothesis still pays for its EOS.
    assert scores[0] == pytest.approx(model.log_prob([A] * 3) / gnmt_penalty(4, 3.0))


def test_never_pad_or_bos():
    model = Bigram({BOS: {PAD_ID: 0.5, BOS: 0.3, A: 0.2}, A: {EOS: 1.0}})
    src, lengths = torch.ones(1, 1, dtype=torch.long), torch.ones(1)
    assert greedy(model, src, lengths, torch.tensor([5])) == [[A]]
    assert decode_one(model)[0] == [A]


@dataclass
class Nested:
    rows: torch.Tensor
    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    position: int


def test_reorder_selects_rows_everywhere():
    x = torch.arange(6).view(3, 2)
    moved = reorder(Nested(x, [(x, x * 2)], 4), torch.tensor([2, 2, 0]))
    assert moved.rows.tolist() == [[4, 5], [4, 5], [0, 1]]
    assert moved.pairs[0][1].tolist() == [[8, 10], [8, 10], [0, 2]]
    assert moved.position == 4


VOCAB = 10


def random_model(model_type):
    """A model with large random weights: varied, source-dependent translations."""
    spec = ModelSpec(
        type=model_type, embedding_dim=16, hidden_size=16, num_layers=2, nhead=2,
        dim_feedforward=16, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_seq2seq(spec, VOCAB, VOCAB + 2, 12, 12, 0.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 1.0)
    return model.eval()


def sources():
    """Four sources of unequal lengths, pads holding real token ids (never to be read)."""
    torch.manual_seed(2)
    lengths = torch.tensor([6, 1, 3, 4])
    return torch.randint(2, VOCAB, (4, 8)), lengths


@pytest.mark.parametrize("model_type", ["gru", "bilstm", "transformer"])
def test_beam_of_one_is_greedy(model_type):
    model = random_model(model_type)
    src, lengths = sources()
    limits = torch.tensor([8, 3, 12, 5])
    expected = greedy(model, src, lengths, limits)
    assert len({len(ids) for ids in expected}) > 1 or len({tuple(i) for i in expected}) > 1
    assert beam_search(model, src, lengths, 1, 0.0, limits)[0] == expected
    assert beam_search(model, src, lengths, 1, 1.0, limits)[0] == expected


@pytest.mark.parametrize("model_type", ["lstm", "bilstm", "transformer"])
def test_a_batch_decodes_as_each_sentence_alone(model_type):
    model = random_model(model_type)
    src, lengths = sources()
    limits = torch.tensor([8, 3, 12, 5])
    batched_greedy = greedy(model, src, lengths, limits)
    batched_beam, batched_scores = beam_search(model, src, lengths, 3, 0.6, limits)
    for row in range(4):
        alone = src[row : row + 1, : lengths[row]]
        one = (alone, lengths[row : row + 1], limits[row : row + 1])
        assert greedy(model, *one) == [batched_greedy[row]]
        ids, scores = beam_search(model, one[0], one[1], 3, 0.6, one[2])
        assert ids == [batched_beam[row]]
        assert scores[0] == pytest.approx(batched_scores[row], abs=1e-4)


@pytest.mark.parametrize("model_type", ["gru", "transformer"])
def test_beam_scores_are_the_models_penalised_log_probs(model_type):
    model = random_model(model_type)
    src, lengths = sources()
    all_ids, scores = beam_search(model, src, lengths, 4, 0.8, torch.full((4,), 12))
    for row, (ids, score) in enumerate(zip(all_ids, scores, strict=True)):
        targets = torch.tensor([[model.bos_id, *ids, model.eos_id]])
        with torch.no_grad():
            logits, _ = model(src[row : row + 1], lengths[row : row + 1], targets)
        log_probs = torch.log_softmax(logits[0], -1).gather(1, targets[0, 1:, None]).sum()
        assert score == pytest.approx(float(log_probs) / gnmt_penalty(len(ids) + 1, 0.8), abs=1e-4)
        assert IGNORE_INDEX not in ids and model.eos_id not in ids
