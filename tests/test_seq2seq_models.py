"""Every seq2seq architecture: the forward contract and its loss, pads that change nothing,
incremental steps equal to teacher forcing, a tiny model that learns to reverse, and an
exact parameter count."""

import pytest
import torch
import torch.nn.functional as F

from shared.data.text import PAD_ID
from shared.protocol import IGNORE_INDEX
from shared.sizes import estimate_parameters
from shared.spec import ModelSpec
from shared.zoo.decoding import greedy
from shared.zoo.seq2seq_models import build_seq2seq
from shared.zoo.seq2seq_rnn import RecurrentSeq2Seq
from shared.zoo.seq2seq_transformer import TransformerSeq2Seq

TYPES = ("rnn", "gru", "lstm", "bilstm", "transformer")
VOCAB = 12  # the tokenizers' V: source ids < V, target ids < V + 2 (BOS, EOS)


def small(model_type, label_smoothing=0.0, layers=2, **extra):
    spec = ModelSpec(
        type=model_type,
        embedding_dim=extra.pop("embedding_dim", 8),
        hidden_size=extra.pop("hidden_size", 6),
        num_layers=layers,
        nhead=2,
        dim_feedforward=12,
        dropout=extra.pop("dropout", 0.0),
        **extra,
    )
    torch.manual_seed(0)
    return spec, build_seq2seq(spec, VOCAB, VOCAB + 2, 16, 16, label_smoothing)


def batch():
    """Three pairs of unequal lengths: src (3, 5) padded with PAD_ID, targets (3, 6)."""
    torch.manual_seed(1)
    lengths = torch.tensor([5, 2, 1])
    src = torch.randint(2, VOCAB, (3, 5)).masked_fill(torch.arange(5) >= lengths[:, None], PAD_ID)
    bos, eos = VOCAB, VOCAB + 1
    rows = [[bos, 3, 4, 5, 6, eos], [bos, 7, eos], [bos, eos]]
    targets = torch.full((3, 6), IGNORE_INDEX)
    for row, ids in enumerate(rows):
        targets[row, : len(ids)] = torch.tensor(ids)
    return src, lengths, targets


@pytest.mark.parametrize("model_type", TYPES)
def test_forward_shapes_and_plain_loss_over_real_labels(model_type):
    _, model = small(model_type)
    model.eval()
    src, lengths, targets = batch()
    logits, loss = model(src, lengths, targets)
    assert logits.shape == (3, 5, VOCAB + 2)
    assert (model.bos_id, model.eos_id) == (VOCAB, VOCAB + 1)
    assert (model.max_source_length, model.max_target_length) == (16, 16)
    labels = targets[:, 1:]
    real = labels != IGNORE_INDEX
    by_hand = -torch.log_softmax(logits, -1)[real].gather(1, labels[real].unsqueeze(1)).mean()
    assert torch.allclose(loss, by_hand, atol=1e-6)
    # More ignored columns: more logits, the same loss.
    longer = torch.cat([targets, torch.full((3, 2), IGNORE_INDEX)], dim=1)
    assert torch.allclose(model(src, lengths, longer)[1], loss, atol=1e-6)


@pytest.mark.parametrize("model_type", ["gru", "transformer"])
def test_label_smoothing_only_while_training(model_type):
    _, model = small(model_type, label_smoothing=0.1)  # dropout 0: same logits in both modes
    src, lengths, targets = batch()
    model.train()
    logits, train_loss = model(src, lengths, targets)
    flat = dict(input=logits.flatten(0, 1), target=targets[:, 1:].flatten())
    assert torch.allclose(train_loss, F.cross_entropy(**flat, label_smoothing=0.1))
    model.eval()
    _, eval_loss = model(src, lengths, targets)
    assert torch.allclose(eval_loss, F.cross_entropy(**flat))
    assert not torch.allclose(train_loss, eval_loss)


def test_forward_needs_targets():
    _, model = small("gru")
    src, lengths, _ = batch()
    with pytest.raises(ValueError, match="needs targets"):
        model(src, lengths)


@pytest.mark.parametrize("model_type", TYPES)
def test_source_pads_never_change_the_logits(model_type):
    _, model = small(model_type)
    model.eval()
    src, lengths, targets = batch()
    logits, _ = model(src, lengths, targets)
    # Three more columns, and every pad position holding a real token id.
    wider = torch.randint(2, VOCAB, (3, 8))
    wider[:, :5] = torch.where(src == PAD_ID, wider[:, :5], src)
    wider_logits, _ = model(wider, lengths, targets)
    real = (targets[:, 1:] != IGNORE_INDEX).unsqueeze(-1)
    assert torch.allclose(logits * real, wider_logits * real, atol=1e-5)


@pytest.mark.parametrize("model_type", TYPES)
def test_incremental_steps_equal_teacher_forcing(model_type):
    _, model = small(model_type)
    model.eval()
    src, lengths, targets = batch()
    inputs = targets[:, :-1].masked_fill(targets[:, :-1] == IGNORE_INDEX, PAD_ID)
    logits, _ = model(src, lengths, targets)
    memory, state = model.encode(src, lengths)
    for position in range(inputs.size(1)):
        log_probs, state = model.step(inputs[:, position], state, memory)
        expected = torch.log_softmax(logits[:, position], -1)
        assert torch.allclose(log_probs, expected, atol=1e-5), position


@pytest.mark.parametrize("model_type", ["gru", "bilstm", "transformer"])
def test_tiny_model_learns_to_reverse(model_type):
    torch.manual_seed(0)
    sources = [[2, 3, 4], [5, 6, 7, 8], [9, 2, 6], [4, 8, 3, 7, 5]]
    _, model = small(model_type, layers=1, embedding_dim=32, hidden_size=32)
    lengths = torch.tensor([len(s) for s in sources])
    src = torch.zeros(len(sources), 5, dtype=torch.long)
    targets = torch.full((len(sources), 7), IGNORE_INDEX)
    for row, ids in enumerate(sources):
        src[row, : len(ids)] = torch.tensor(ids)
        targets[row, : len(ids) + 2] = torch.tensor([model.bos_id, *ids[::-1], model.eos_id])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(80):
        optimizer.zero_grad()
        model(src, lengths, targets)[1].backward()
        optimizer.step()
    model.eval()
    assert greedy(model, src, lengths, torch.full((4,), 10)) == [s[::-1] for s in sources]


def test_shared_and_tied_embeddings_are_one_table():
    for model_type in ("lstm", "transformer"):
        _, model = small(model_type, hidden_size=8, share_embeddings=True, tie_embeddings=True)
        assert model.embedding is model.encoder.embedding
        assert model.output.weight is model.embedding.weight
        assert model.embedding.num_embeddings == VOCAB + 2


def test_refused_configurations():
    with pytest.raises(ValueError, match="general or additive"):
        small("bilstm", attention="dot")
    with pytest.raises(ValueError, match="tie_embeddings"):
        small("gru", tie_embeddings=True)  # embedding_dim 8, hidden_size 6


SIZE_CASES = [
    (model_type, attention, share, tie)
    for model_type in TYPES
    for attention in (
        ("additive",) if model_type == "transformer" else ("additive", "dot", "general")
    )
    for share in (False, True)
    for tie in (False, True)
    if not (model_type == "bilstm" and attention == "dot")
]


@pytest.mark.parametrize(("model_type", "attention", "share", "tie"), SIZE_CASES)
def test_parameter_count_is_exact(model_type, attention, share, tie):
    spec, model = small(
        model_type,
        hidden_size=8,  # equal to embedding_dim, so tying is valid for recurrent models
        attention=attention,
        share_embeddings=share,
        tie_embeddings=tie,
    )
    assert isinstance(
        model, TransformerSeq2Seq if model_type == "transformer" else RecurrentSeq2Seq
    )
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)  # shared ones once
    assert estimate_parameters(spec, VOCAB, 2, "seq2seq") == built
