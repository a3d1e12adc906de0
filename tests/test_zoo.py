"""Every architecture: the forward contract, pads that change nothing, and falling loss."""

import pytest
import torch

from shared.spec import ModelSpec
from shared.text import PAD_ID
from shared.zoo import REGISTRY, build_model

ARCHITECTURES = list(REGISTRY)


def small(model_type: str, layers: int = 2) -> torch.nn.Module:
    spec = ModelSpec(
        type=model_type,
        embedding_dim=16,
        hidden_size=12,
        num_layers=layers,
        nhead=2,
        dim_feedforward=24,
        dropout=0.0,
    )
    torch.manual_seed(0)
    return build_model(spec, vocab_size=30, num_classes=3, max_length=20)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_padding_never_changes_the_result(model_type):
    model = small(model_type).eval()
    sequence = torch.tensor([[5, 9, 3, 7]])
    alone, _ = model(sequence, torch.tensor([4]))
    padded = torch.full((2, 11), PAD_ID)
    padded[0, :4] = sequence[0]
    padded[1, :11] = torch.arange(2, 13)
    batched, _ = model(padded, torch.tensor([4, 11]))
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_forward_contract_and_loss_falls(model_type):
    model = small(model_type, layers=1)
    torch.manual_seed(1)
    tokens = torch.randint(2, 30, (16, 9))
    lengths = torch.randint(1, 10, (16,))
    for row, length in enumerate(lengths):
        tokens[row, length:] = PAD_ID
    targets = tokens[:, 0] % 3  # learnable from the first token
    logits, loss = model(tokens, lengths)
    assert logits.shape == (16, 3) and loss is None
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        _, loss = model(tokens, lengths, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_unknown_type_lists_valid_names():
    spec = ModelSpec.model_construct(type="cnn")
    with pytest.raises(ValueError, match="valid: rnn, gru, lstm, bilstm, transformer"):
        build_model(spec, 10, 2, 8)
