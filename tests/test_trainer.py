"""The loop without the service: metrics, checkpoints that hold all state, exact resume."""

import math

import torch
from safetensors.torch import load_file

from shared.spec import parse_spec
from tests.helpers import tiny_spec
from worker.trainer import Reporter, load_checkpoint, save_checkpoint, train


class Collect:
    def __init__(self, tmp_path):
        self.rows, self.saved, self.tmp_path = [], [], tmp_path

    def reporter(self) -> Reporter:
        return Reporter(lambda rows, epoch, step: self.rows.extend(rows), self.save)

    def save(self, state, epoch, step, metrics):
        path = self.tmp_path / f"step-{step}.safetensors"
        save_checkpoint(path, state)
        self.saved.append(path)


def test_training_improves_and_checkpoints(tmp_path):
    torch.set_num_threads(1)
    spec = parse_spec(tiny_spec(training={"epochs": 4, "lr": 0.03}))
    out = Collect(tmp_path)
    result = train(spec, out.reporter())
    epoch_loss = [
        r["value"]
        for r in out.rows
        if (r["split"], r["name"]) == ("train", "loss") and r["step"] % 5 == 0
    ]
    assert epoch_loss and all(math.isfinite(v) for v in epoch_loss)
    val_acc = [r["value"] for r in out.rows if (r["split"], r["name"]) == ("val", "accuracy")]
    val_loss = [r["value"] for r in out.rows if (r["split"], r["name"]) == ("val", "loss")]
    assert len(val_acc) == 4 and val_acc[-1] > 0.75 and val_loss[-1] < val_loss[0]
    assert len(out.saved) == 4 and result.epoch == 4
    weights = load_file(out.saved[-1])  # loads with safetensors alone
    assert "model.embedding.weight" in weights
    state = load_checkpoint(out.saved[-1])
    assert state["epoch"] == 4 and state["labels"] == ["negative", "positive"]
    assert state["tokenizer"]["tokens"][:2] == ["<pad>", "<unk>"]


def test_resume_from_a_checkpoint_ends_with_identical_weights(tmp_path):
    torch.set_num_threads(1)
    spec = parse_spec(tiny_spec(training={"epochs": 3}, model={"dropout": 0.3}))
    straight = Collect(tmp_path / "a")
    (tmp_path / "a").mkdir()
    train(spec, straight.reporter())

    resumed = Collect(tmp_path / "b")
    (tmp_path / "b").mkdir()
    train(spec, resumed.reporter(), resume=load_checkpoint(straight.saved[0]))  # after epoch 1
    final_a = load_checkpoint(straight.saved[-1])
    final_b = load_checkpoint(resumed.saved[-1])
    assert final_b["step"] == final_a["step"]
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key


def test_the_checkpoint_carries_the_trained_tokenizer(tmp_path):
    from shared.tokenization import tokenizer_from_dict
    from worker.data import load_splits, prepare_classification

    spec = parse_spec(
        tiny_spec(training={"epochs": 1}, data={"tokenizer": {"kind": "bpe", "vocab_size": 80}})
    )
    out = Collect(tmp_path)
    train(spec, out.reporter())
    state = load_checkpoint(out.saved[-1])
    reloaded = tokenizer_from_dict(state["tokenizer"])
    trained = prepare_classification(
        spec.data, spec.training.seed, load_splits(spec.data, None)
    ).tokenizer
    for text in ("the plot was not dull !", "frankly , the zebra sang", ""):
        assert reloaded.encode(text, 32) == trained.encode(text, 32)
    assert reloaded.kind == "bpe" and reloaded.vocab_size <= 80
