"""shared.jobs.estimate against the real thing: the parameter count against the model built on the
`meta` device, the peak against the live tensor bytes of real training steps on CPU."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from shared.jobs.estimate import estimate_training, vocabulary_bound
from shared.spec import estimate_parameters, parse_spec
from shared.zoo import build_model


class PeakTensorBytes(TorchDispatchMode):
    """The largest sum of live tensor storage bytes while active (any device, CPU included)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = self.peak = 0

    def _free(self, size: int) -> None:
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            if storage in self.seen:
                continue
            size = storage.nbytes()
            self.seen[storage] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, size)
        return out


def spec_for(task: str, model: dict[str, Any], **data: Any) -> Any:
    tokenizer = {"kind": "char" if task == "language_modeling" else "word", "vocab_size": 2000}
    return parse_spec(
        {
            "name": "estimate",
            "task": task,
            "data": {"max_length": 64, "tokenizer": tokenizer, **data},
            "model": model,
            "training": {"batch_size": 32},
        }
    )


CASES = {
    "lstm-last": ("classification", {"type": "lstm", "embedding_dim": 64, "hidden_size": 256}),
    "gru-mean-2": (
        "classification",
        {
            "type": "gru",
            "embedding_dim": 64,
            "hidden_size": 128,
            "num_layers": 2,
            "pooling": "mean",
        },
    ),
    "rnn-max": ("classification", {"type": "rnn", "hidden_size": 256, "pooling": "max"}),
    "bilstm-crf-tagging": ("tagging", {"type": "bilstm", "embedding_dim": 64, "hidden_size": 128}),
    "transformer-classifier": (
        "classification",
        {"type": "transformer", "embedding_dim": 128, "nhead": 4, "num_layers": 2},
    ),
    "transformer-lm": (
        "language_modeling",
        {"type": "transformer", "embedding_dim": 128, "nhead": 4, "num_layers": 2},
    ),
    "lstm-lm": ("language_modeling", {"type": "lstm", "embedding_dim": 64, "hidden_size": 256}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_count_matches_the_model_on_the_meta_device(name):
    task, model = CASES[name]
    spec = spec_for(task, model)
    vocab, classes = vocabulary_bound(spec), 9
    with torch.device("meta"):
        built = build_model(spec.model, task, vocab, classes, spec.data.max_length)
    counted = sum(p.numel() for p in built.parameters())
    assert estimate_parameters(spec.model, vocab, classes, task) == counted


@pytest.mark.parametrize("name", list(CASES))
def test_peak_memory_estimate_is_within_30_percent_of_a_measured_cpu_step(name):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    task, model = CASES[name]
    spec = spec_for(task, model)
    vocab, classes = vocabulary_bound(spec), 9
    batch, length = spec.training.batch_size, spec.data.max_length
    tokens = torch.randint(2, vocab, (batch, length))
    lengths = torch.full((batch,), length)
    if task == "classification":
        targets = torch.randint(0, classes, (batch,))
    else:
        targets = torch.randint(0, classes if task == "tagging" else vocab, (batch, length))
    with PeakTensorBytes() as meter:
        net = build_model(spec.model, task, vocab, classes, length)
        optimizer = torch.optim.AdamW(net.parameters(), fused=True)
        for _ in range(2):  # the second step holds the optimizer state and old gradients
            _, loss = net(tokens, lengths, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    estimate = estimate_training(spec, "cpu", num_classes=classes)
    ratio = estimate["peak_tensor_bytes"] / meter.peak
    assert 0.7 <= ratio <= 1.3, (
        f"estimated {estimate['peak_tensor_bytes']:,}, measured {meter.peak:,}"
    )


def test_autocast_on_a_gpu_counts_the_bf16_copies_and_fewer_activation_bytes():
    spec = spec_for("classification", CASES["lstm-last"][1])
    cpu, gpu = estimate_training(spec, "cpu"), estimate_training(spec, "cuda")
    assert gpu["parameters"] == cpu["parameters"]
    assert gpu["overhead_bytes"] > cpu["overhead_bytes"]
    assert gpu["peak_tensor_bytes"] < cpu["peak_tensor_bytes"] + 2 * cpu["parameters"]
