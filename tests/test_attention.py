"""Each attention kind against scores worked out by hand, and pads that get exactly no weight."""

import math

import pytest
import torch

from shared.zoo.attention import (
    ATTENTION_KINDS,
    AdditiveAttention,
    MultiplicativeAttention,
    build_attention,
)

KEYS = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])  # (B=1, S=2, K=2)
NO_PADS = torch.tensor([[False, False]])


def softmax2(first: float, second: float) -> tuple[float, float]:
    total = math.exp(first) + math.exp(second)
    return math.exp(first) / total, math.exp(second) / total


def expect(attention, query, scores):
    """The module's (context, weights) against softmax(scores) over KEYS."""
    w1, w2 = softmax2(*scores)
    context, weights = attention(torch.tensor([query]), KEYS, NO_PADS)
    assert torch.allclose(weights, torch.tensor([[w1, w2]]), atol=1e-6)
    # context = w1 * [3, 0] + w2 * [0, 1]
    assert torch.allclose(context, torch.tensor([[3 * w1, w2]]), atol=1e-6)


def test_additive_by_hand():
    attention = AdditiveAttention(query_width=2, key_width=2)
    with torch.no_grad():
        attention.query_projection.weight.copy_(torch.eye(2))
        attention.key_projection.weight.copy_(torch.eye(2))
        attention.key_projection.bias.copy_(torch.tensor([0.0, -1.0]))
        attention.score.weight.copy_(torch.tensor([[1.0, 2.0]]))
    # q = [1, 0]: W_q q + W_k k + b is [4, -1] for k1 and [1, 0] for k2;
    # v . tanh(...) = tanh(4) - 2 tanh(1) and tanh(1).
    expect(attention, [1.0, 0.0], (math.tanh(4) - 2 * math.tanh(1), math.tanh(1)))


def test_dot_by_hand():
    # q = [1, 2]: q . k1 = 3, q . k2 = 2
    expect(MultiplicativeAttention("dot", 2, 2), [1.0, 2.0], (3.0, 2.0))


def test_general_by_hand():
    attention = MultiplicativeAttention("general", query_width=2, key_width=2)
    with torch.no_grad():
        attention.key_projection.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    # W k1 = [0, 6], W k2 = [1, 0]; q = [1, 0.5]: scores 3 and 1
    expect(attention, [1.0, 0.5], (3.0, 1.0))


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_pads_get_exactly_zero_weight_and_never_matter(kind):
    torch.manual_seed(0)
    attention = build_attention(kind, query_width=4, key_width=4)
    query, keys = torch.randn(3, 4), torch.randn(3, 5, 4)
    padding = torch.arange(5).unsqueeze(0) >= torch.tensor([[5], [2], [1]])  # (3, 5)
    context, weights = attention(query, keys, padding)
    assert torch.all(weights[padding] == 0.0)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    garbage = keys.masked_fill(padding.unsqueeze(-1), 1000.0) + padding.unsqueeze(-1) * torch.randn(
        3, 5, 4
    )
    context2, weights2 = attention(query, garbage, padding)
    assert torch.equal(weights, weights2)
    assert torch.equal(context, context2)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_prepared_keys_give_the_same_result(kind):
    torch.manual_seed(0)
    attention = build_attention(kind, query_width=3, key_width=3)
    query, keys = torch.randn(2, 3), torch.randn(2, 4, 3)
    padding = torch.tensor([[False] * 4, [False, False, True, True]])
    plain = attention(query, keys, padding)
    prepared = attention(query, keys, padding, attention.prepare(keys))
    assert all(torch.equal(a, b) for a, b in zip(plain, prepared, strict=True))


def test_dot_refuses_unequal_widths_and_unknown_kinds():
    with pytest.raises(ValueError, match="general or additive"):
        build_attention("dot", query_width=4, key_width=8)
    with pytest.raises(ValueError, match="additive, dot, general"):
        build_attention("cosine", 4, 4)
