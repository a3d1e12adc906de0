"""ONNX export (shared/zoo/onnx.py): every exported kind and model family, built tiny from a
spec, agrees with PyTorch under onnxruntime to 1e-4 at two (batch, length) shapes with mixed
lengths, and at shapes other than the export's example."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.spec import ModelSpec
from shared.zoo import build_model
from shared.zoo.onnx import (
    INPUTS,
    PARITY_TOLERANCE,
    NotExportable,
    check_parity,
    export_onnx,
    onnx_session,
    parity_shapes,
)

VOCAB, LABELS, MAX_LENGTH = 40, 3, 24
TINY = {"embedding_dim": 16, "hidden_size": 8, "nhead": 2, "dim_feedforward": 32}

# (task, model fields): each exported kind, each family it trains.
CASES = [
    ("classification", {"type": "lstm", "pooling": "last"}),
    ("classification", {"type": "gru", "pooling": "max", "num_layers": 2}),
    ("classification", {"type": "rnn", "pooling": "mean"}),
    ("classification", {"type": "bilstm", "pooling": "attention", "num_layers": 2}),
    ("classification", {"type": "bilstm", "pooling": "last"}),
    ("classification", {"type": "transformer", "num_layers": 2}),
    ("tagging", {"type": "bilstm", "crf": True}),
    ("tagging", {"type": "gru", "crf": False}),
    ("tagging", {"type": "transformer", "crf": True}),
    ("language_modeling", {"type": "gru"}),
    ("language_modeling", {"type": "lstm", "num_layers": 2}),
    ("language_modeling", {"type": "rnn"}),
    ("language_modeling", {"type": "transformer"}),
]


def _tiny(task: str, fields: dict[str, object]) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec.model_validate({**TINY, "dropout": 0.1, **fields})
    vocab_or_labels = VOCAB if task == "language_modeling" else LABELS
    return build_model(spec, task, VOCAB, vocab_or_labels, MAX_LENGTH).eval()


@pytest.mark.parametrize(("task", "fields"), CASES, ids=lambda c: str(c))
def test_onnx_matches_pytorch(tmp_path: Path, task: str, fields: dict[str, object]) -> None:
    model = _tiny(task, fields)
    path = tmp_path / "model.onnx"
    info = export_onnx(model, task, path, MAX_LENGTH)
    assert [value["name"] for value in info["inputs"]] == list(INPUTS)
    assert info["inputs"][0] == {"name": "tokens", "dtype": "int64", "shape": ["batch", "length"]}
    width = VOCAB if task == "language_modeling" else LABELS
    expected_shape = ["batch", width] if task == "classification" else ["batch", "length", width]
    assert info["outputs"][0]["shape"] == expected_shape
    # Two shapes with mixed lengths (row 0 full, the others shorter), neither the example's.
    worst = check_parity(model, path, VOCAB, shapes=((3, 9), (6, 17)))
    assert worst <= PARITY_TOLERANCE, worst
    # A single one-token sequence and a batch at the longest length still run and agree.
    assert check_parity(model, path, VOCAB, shapes=((1, 1), (2, MAX_LENGTH)), seed=7) <= 1e-4
    # The model itself is untouched by the export (it is copied, then rewritten).
    assert not any("cells" in name for name, _ in model.named_modules())


def test_parity_shapes_stay_within_a_short_max_length(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ModelSpec.model_validate({**TINY, "type": "transformer"})
    model = build_model(spec, "classification", VOCAB, LABELS, 6).eval()
    export_onnx(model, "classification", tmp_path / "short.onnx", 6)
    assert parity_shapes(6) == ((2, 6), (5, 6))
    assert check_parity(model, tmp_path / "short.onnx", VOCAB, parity_shapes(6)) <= 1e-4


def test_bidirectional_pads_do_not_leak(tmp_path: Path) -> None:
    """A sequence's emissions depend only on its own real tokens: padded beside a longer one,
    a short sentence gets the same scores as alone (the backward direction starts at its
    last real token, not at the pads)."""
    model = _tiny("tagging", {"type": "bilstm", "crf": True})
    path = tmp_path / "tagger.onnx"
    export_onnx(model, "tagging", path, MAX_LENGTH)
    session = onnx_session(path)
    short = [5, 6, 7]
    batch = torch.tensor([short + [0] * 5, [9, 8, 7, 6, 5, 4, 3, 2]])
    (together,) = session.run(None, {"tokens": batch.numpy(), "lengths": [3, 8]})
    (alone,) = session.run(None, {"tokens": torch.tensor([short]).numpy(), "lengths": [3]})
    assert abs(together[0, :3] - alone[0]).max() <= 1e-5
    with torch.no_grad():
        reference, _ = model(batch, torch.tensor([3, 8]))
    assert abs(together - reference.numpy()).max() <= 1e-4


def test_pretrained_is_not_exported(tmp_path: Path) -> None:
    """A pretrained (Hugging Face) backbone has no export: a clear NotExportable, no file."""
    from tests.hfmodels import tiny_bert

    backbone = tiny_bert(tmp_path / "bert", ["a", "good", "film"])
    spec = ModelSpec.model_validate({"type": "pretrained", "pretrained": "bert"})
    model = build_model(spec, "classification", 0, 2, MAX_LENGTH, backbone=backbone)
    path = tmp_path / "model.onnx"
    with pytest.raises(NotExportable, match="pretrained"):
        export_onnx(model, "classification", path, MAX_LENGTH)
    assert not path.exists()
