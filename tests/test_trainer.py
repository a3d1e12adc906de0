"""The loop without the service: metrics, checkpoints that hold all state, exact resume."""

import math

import pytest
import torch
from safetensors.torch import load_file

from shared.spec import parse_spec
from shared.zoo.checkpoints import load_checkpoint, save_checkpoint
from tests.helpers import tiny_spec
from worker.trainer import Reporter, train


class Collect:
    def __init__(self, tmp_path):
        self.rows, self.saved, self.tmp_path = [], [], tmp_path

    def reporter(self) -> Reporter:
        return Reporter(lambda rows, epoch, step: self.rows.extend(rows), self.save)

    def save(self, state, epoch, step, metrics, is_best=False):
        path = self.tmp_path / f"step-{step}-{state['next_batch']}.safetensors"
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
    assert "model.encoder.embedding.weight" in weights
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
    from shared.data.examples import load_splits, prepare
    from shared.data.tokenization import tokenizer_from_dict

    spec = parse_spec(
        tiny_spec(training={"epochs": 1}, data={"tokenizer": {"kind": "bpe", "vocab_size": 80}})
    )
    out = Collect(tmp_path)
    train(spec, out.reporter())
    state = load_checkpoint(out.saved[-1])
    reloaded = tokenizer_from_dict(state["tokenizer"])
    trained = prepare(
        "classification", spec.data, spec.training.seed, load_splits(spec, None)
    ).tokenizer
    for text in ("the plot was not dull !", "frankly , the zebra sang", ""):
        assert reloaded.encode(text, 32) == trained.encode(text, 32)
    assert reloaded.kind == "bpe" and reloaded.vocab_size <= 80


TASK_SPECS = {
    "classification": tiny_spec(model={"dropout": 0.3}, training={"epochs": 2}),
    "tagging": tiny_spec(
        task="tagging",
        data={"dataset": "builtin:entities", "tokenizer": {"lowercase": False}},
        model={"type": "bilstm", "crf": True, "dropout": 0.2},
        training={"epochs": 2},
    ),
    "language_modeling": tiny_spec(
        task="language_modeling",
        data={
            "dataset": "builtin:stories",
            "max_length": 24,
            "tokenizer": {"kind": "char", "vocab_size": 60},
        },
        model={
            "type": "transformer",
            "embedding_dim": 16,
            "nhead": 2,
            "dim_feedforward": 32,
            "dropout": 0.1,
        },
        training={"epochs": 2, "max_steps": 30},
    ),
    # Sequence to sequence: every validation decodes (beam search), so resuming must also
    # give the same BLEU; label smoothing and dropout draw nothing at evaluation.
    "seq2seq_gru_attention": tiny_spec(
        task="seq2seq",
        data={"dataset": "builtin:dates", "max_length": 24, "tokenizer": {"kind": "char"}},
        model={"type": "gru", "embedding_dim": 16, "hidden_size": 24, "dropout": 0.2},
        training={"epochs": 2, "max_steps": 30, "label_smoothing": 0.1},
        decoding={"beam_size": 2, "samples": 2},
    ),
    "seq2seq_transformer": tiny_spec(
        task="seq2seq",
        data={"dataset": "builtin:dates", "max_length": 24, "tokenizer": {"kind": "char"}},
        model={
            "type": "transformer",
            "embedding_dim": 16,
            "nhead": 2,
            "dim_feedforward": 32,
            "dropout": 0.1,
            "share_embeddings": True,
            "tie_embeddings": True,
        },
        training={"epochs": 2, "max_steps": 30, "label_smoothing": 0.1},
        decoding={"beam_size": 2, "samples": 2},
    ),
}


@pytest.mark.parametrize("task", list(TASK_SPECS))
def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path, task):
    """Deterministic CPU run: stop anywhere a checkpoint was written, resume, same weights."""
    torch.set_num_threads(1)
    spec = parse_spec(
        {
            **TASK_SPECS[task],
            "checkpoint": {"every_steps": 7, "keep_last": 50},
            "training": {**TASK_SPECS[task]["training"], "deterministic": True},
        }
    )
    straight = Collect(tmp_path / "a")
    (tmp_path / "a").mkdir()
    result = train(spec, straight.reporter())
    mid = [p for p in straight.saved if load_checkpoint(p)["next_batch"] > 0]
    assert mid, "no mid-epoch checkpoint was written"
    resumed = Collect(tmp_path / "b")
    (tmp_path / "b").mkdir()
    again = train(spec, resumed.reporter(), resume=load_checkpoint(mid[0]))
    assert again.step == result.step
    final_a, final_b = load_checkpoint(straight.saved[-1]), load_checkpoint(resumed.saved[-1])
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key
    for key in ("val/loss", "val/bleu"):
        if key in result.metrics:
            assert again.metrics[key] == result.metrics[key]


def test_tagging_reports_entity_f1_and_language_models_perplexity(tmp_path):
    torch.set_num_threads(1)
    tagged = train(
        parse_spec({**TASK_SPECS["tagging"], "training": {"epochs": 8, "lr": 0.03}}),
        Collect(tmp_path).reporter(),
    )
    assert tagged.metrics["val/f1"] > 0.5 and 0 <= tagged.metrics["val/precision"] <= 1
    lm = train(parse_spec(TASK_SPECS["language_modeling"]), Collect(tmp_path).reporter())
    assert lm.metrics["val/perplexity"] == pytest.approx(math.exp(lm.metrics["val/loss"]))
    assert lm.metrics["val/loss"] < math.log(60)  # better than uniform over the characters


def test_early_stopping_keeps_the_best(tmp_path):
    spec = parse_spec(tiny_spec(training={"epochs": 30, "lr": 0.05, "early_stopping_patience": 2}))
    out = Collect(tmp_path)
    result = train(spec, out.reporter())
    assert result.stopped_early and result.epoch < 30


def test_a_loss_that_becomes_nan_stops_training_with_the_step(tmp_path):
    """Weights that turn non-finite (here: a corrupted checkpoint) fail fast with the step."""
    from worker.trainer import TrainingError

    torch.set_num_threads(1)
    spec = parse_spec(tiny_spec(training={"epochs": 2, "max_steps": 30}))
    out = Collect(tmp_path)
    train(parse_spec(tiny_spec(training={"epochs": 1})), out.reporter())
    state = load_checkpoint(out.saved[-1])
    resumed_at = state["step"]
    for name, tensor in state["model"].items():
        if name.endswith("weight"):
            tensor.fill_(float("nan"))
    with pytest.raises(TrainingError, match=rf"loss became nan at step {resumed_at + 1}$"):
        train(spec, Collect(tmp_path).reporter(), resume=state)
