import random

import torch
from safetensors.torch import load_file, save_file

from shared.zoo.statecodec import flatten, unflatten


def test_optimizer_and_rng_state_round_trip(tmp_path):
    model = torch.nn.LSTM(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(2, 1, 4))[0].sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "epoch": 3,
        "labels": ["neg", "pos"],
        "nothing": None,
    }
    tensors, document = flatten(state)
    save_file(tensors, tmp_path / "c.safetensors", metadata={"doc": document})
    restored = unflatten(load_file(tmp_path / "c.safetensors"), document)

    assert (
        restored["epoch"] == 3
        and restored["labels"] == ["neg", "pos"]
        and restored["nothing"] is None
    )
    assert restored["rng"]["python"] == random.getstate()
    assert torch.equal(restored["rng"]["torch"], torch.get_rng_state())
    for key, value in model.state_dict().items():
        assert torch.equal(restored["model"][key], value)
    fresh = torch.optim.AdamW(torch.nn.LSTM(4, 3).parameters(), lr=0.5)
    fresh.load_state_dict(restored["optimizer"])
    assert fresh.param_groups[0]["lr"] == 0.1 and tuple(fresh.param_groups[0]["betas"]) == (
        0.8,
        0.9,
    )
    assert set(fresh.state_dict()["state"]) == set(optimizer.state_dict()["state"])


def test_model_weights_are_plain_named_tensors():
    tensors, _ = flatten({"model": torch.nn.Linear(2, 2).state_dict()})
    assert set(tensors) == {"model.weight", "model.bias"}
