"""Every architecture x every task it supports: the forward contract, pads that change
nothing, falling loss on tiny data, and an exact parameter count."""

import pytest
import torch

from shared.data.text import PAD_ID
from shared.registry import SCRATCH_TYPES
from shared.spec import ModelSpec, estimate_parameters
from shared.zoo import build_model

IGNORE = -100
PAIRS = [
    (t, task)
    for task in ("classification", "tagging", "language_modeling")
    for t in SCRATCH_TYPES  # pretrained models: tests/test_pretrained.py
    if not (task == "language_modeling" and t == "bilstm")
]


def small(model_type, task, layers=2, **extra):
    spec = ModelSpec(
        type=model_type,
        embedding_dim=16,
        hidden_size=12,
        num_layers=layers,
        nhead=2,
        dim_feedforward=24,
        dropout=0.0,
        **extra,
    )
    torch.manual_seed(0)
    return spec, build_model(spec, task, vocab_size=30, num_classes=3, max_length=20)


def tiny_batch(task):
    torch.manual_seed(1)
    tokens = torch.randint(2, 30, (16, 9))
    lengths = torch.randint(1, 10, (16,)) if task != "language_modeling" else torch.full((16,), 9)
    for row, length in enumerate(lengths):
        tokens[row, length:] = PAD_ID
    if task == "classification":
        targets = tokens[:, 0] % 3  # learnable from the first token
    elif task == "tagging":
        targets = (tokens % 3).masked_fill(tokens == PAD_ID, IGNORE)  # the tag is the token mod 3
    else:
        tokens = (
            torch.arange(16).unsqueeze(1).add(torch.arange(10)).remainder(28).add(2)
        )  # counting
        targets, tokens = tokens[:, 1:], tokens[:, :-1]
    return tokens, lengths, targets


@pytest.mark.parametrize(("model_type", "task"), PAIRS)
def test_trains_a_few_steps_with_falling_loss(model_type, task):
    _, model = small(model_type, task, layers=1)
    tokens, lengths, targets = tiny_batch(task)
    logits, loss = model(tokens, lengths)
    assert loss is None and logits.shape[0] == 16
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        _, loss = model(tokens, lengths, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]


@pytest.mark.parametrize(("model_type", "task"), PAIRS)
@pytest.mark.parametrize(
    "option", [{}, {"pooling": "attention"}, {"pooling": "max"}, {"crf": False}]
)
def test_parameter_estimate_is_exact(model_type, task, option):
    spec, model = small(model_type, task, **option)
    actual = sum(p.numel() for p in model.parameters())
    assert estimate_parameters(spec, 30, 3, task) == actual


@pytest.mark.parametrize("model_type", SCRATCH_TYPES)
@pytest.mark.parametrize("task", ["classification", "tagging"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_padding_never_changes_the_result(model_type, task, pooling):
    if task == "tagging" and pooling != "last":
        pytest.skip("pooling applies to classification")
    _, model = small(model_type, task, pooling=pooling)
    model.eval()
    sequence = torch.tensor([[5, 9, 3, 7]])
    alone, _ = model(sequence, torch.tensor([4]))
    padded = torch.full((2, 11), PAD_ID)
    padded[0, :4] = sequence[0]
    padded[1, :11] = torch.arange(2, 13)
    batched, _ = model(padded, torch.tensor([4, 11]))
    if task == "tagging":
        batched = batched[:, :4]
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)


def test_causal_language_model_never_reads_ahead():
    _, model = small("transformer", "language_modeling")
    model.eval()
    tokens = torch.tensor([[4, 8, 15, 16, 23, 29]])
    full, _ = model(tokens, torch.tensor([6]))
    changed = tokens.clone()
    changed[0, 4:] = 2
    prefix, _ = model(changed, torch.tensor([6]))
    torch.testing.assert_close(full[0, :4], prefix[0, :4])


def test_generation_respects_top_k_and_length():
    _, model = small("gru", "language_modeling")
    out = model.generate(
        [5, 6, 7], length=12, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(0)
    )
    assert len(out) == 12 and all(2 <= t < 30 for t in out)


def test_unknown_names_list_the_valid_ones():
    spec = ModelSpec.model_construct(type="cnn")
    with pytest.raises(ValueError, match="valid: rnn, gru, lstm, bilstm, transformer"):
        build_model(spec, "classification", 10, 2, 8)
    with pytest.raises(ValueError, match="valid: classification, language_modeling, tagging"):
        build_model(ModelSpec(), "translation", 10, 2, 8)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_one_direction_runs_dense_yet_matches_packing_at_every_real_token(cell):
    """The dense call computes states over the pads too, but every state read (real tokens,
    the last real token) equals what packed sequences give; pads never reach them."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from shared.zoo.encoders import RecurrentEncoder

    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 50, 8, 12, num_layers=2, dropout=0.0, bidirectional=False)
    encoder.eval()
    lengths = torch.tensor([7, 3, 5, 1])
    tokens = torch.randint(2, 50, (4, 7))
    tokens[torch.arange(7).unsqueeze(0) >= lengths.unsqueeze(1)] = 0  # right-padded
    states, padding, last = encoder(tokens, lengths)
    packed = pack_padded_sequence(
        encoder.embedding(tokens), lengths, batch_first=True, enforce_sorted=False
    )
    out, hidden = encoder.rnn(packed)
    want = pad_packed_sequence(out, batch_first=True, total_length=7)[0]
    h_n = hidden[0] if isinstance(hidden, tuple) else hidden
    real = ~padding
    assert torch.allclose(states[real], want[real], atol=1e-6)
    assert torch.allclose(last, h_n[-1], atol=1e-6)
    # Changing what sits in the pads changes nothing that is read.
    other = tokens.clone()
    other[padding] = 7
    states2, _, last2 = encoder(other, lengths)
    assert torch.equal(states2[real], states[real]) and torch.equal(last2, last)
