"""Pretrained Hugging Face models in the loop, without the service: a tiny BERT and a tiny
GPT-2 built from configs (tests/hfmodels.py), fine-tuned in-process by worker.loop.train
for every task; freeze and LoRA train what they should; resume is exact; nothing reaches
the network."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from shared.data.datasets import BUILTIN_DATASETS, load
from shared.data.examples import load_splits, prepare_tagging
from shared.data.pretrained_tokens import PretrainedTokenizer
from shared.data.tokenization import tokenizer_from_dict
from shared.protocol import IGNORE_INDEX
from shared.registry import task_info
from shared.spec import JobSpec, parse_spec
from shared.zoo import build_model
from shared.zoo.checkpoints import load_checkpoint, load_model_state, model_state, save_checkpoint
from shared.zoo.pretrained import PretrainedModelError, pretrained_tokenizer
from tests.helpers import tiny_spec
from tests.hfmodels import tiny_bert, tiny_gpt2
from worker.loop import epoch_order, setup, train, train_epoch
from worker.reporting import Reporter


def builtin_words(name: str) -> list[str]:
    rows = load(BUILTIN_DATASETS[name], None).rows  # type: ignore[arg-type]
    if "tokens" in rows[0]:
        return [t for r in rows for t in r["tokens"]]
    return [w for r in rows for w in re.findall(r"\w+|[^\w\s]", r["text"])]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Words of the sentiment and entity sets, and their letters as pieces: a word that is
    # not one of them, such as "actingfilm", splits into sub-tokens.
    words = builtin_words("sentiment") + builtin_words("entities")
    return tiny_bert(tmp_path_factory.mktemp("hf") / "bert", words)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = load(BUILTIN_DATASETS["stories"], None).text or ""  # type: ignore[arg-type]
    return tiny_gpt2(tmp_path_factory.mktemp("hf") / "gpt2", text.splitlines())


def pretrained(task: str = "classification", **sections: dict[str, Any]) -> JobSpec:
    """A small fine-tuning spec; `model` replaces the model section's options."""
    dataset = {"classification": "sentiment", "tagging": "entities"}.get(task, "stories")
    spec = tiny_spec(
        task=task,
        data={"dataset": f"builtin:{dataset}", "max_length": 32, **sections.get("data", {})},
        training={"epochs": 2, "batch_size": 16, "lr": 3e-3, **sections.get("training", {})},
    )
    spec["model"] = {"type": "pretrained", "pretrained": "tiny", **sections.get("model", {})}
    return parse_spec(spec)


class Collect:
    """A reporter that keeps the metric rows and each checkpoint, through the file format."""

    def __init__(self, tmp_path: Path) -> None:
        self.rows: list[dict[str, Any]] = []
        self.paths: list[Path] = []
        self.tmp_path = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)

    def reporter(self) -> Reporter:
        return Reporter(lambda rows, epoch, step: self.rows.extend(rows), self.save)

    def save(self, state: dict[str, Any], epoch: int, step: int, metrics: Any, is_best=False):
        path = self.tmp_path / f"{len(self.paths)}-step-{step}.safetensors"
        save_checkpoint(path, state)
        self.paths.append(path)

    def metric(self, split: str, name: str) -> list[float]:
        return [r["value"] for r in self.rows if (r["split"], r["name"]) == (split, name)]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


# ---------------------------------------------------------------- the tokenizer


def test_the_bert_tokenizer_adds_and_keeps_its_special_tokens(bert):
    tok = pretrained_tokenizer(bert)
    config = json.loads((bert / "config.json").read_text())
    vocab = (bert / "vocab.txt").read_text().split()
    assert isinstance(tok, PretrainedTokenizer) and tok.vocab_size == config["vocab_size"]
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    ids = tok.encode("The Actingfilm sang")
    assert ids[0] == cls and ids[-1] == sep
    assert tok.tokenizer.id_to_token(ids[3]) == "##f"  # the acting ##f ##i ##l ##m sang
    assert tok.decode(ids) == "the actingfilm sang"  # lower-cased, specials skipped
    assert tok.decode(tok.encode("the ☃ film")) == "the [UNK] film"  # the unknown stays
    cut = tok.encode("the film was great and the acting was great", max_length=5)
    assert len(cut) == 5 and cut[0] == cls and cut[-1] == sep
    assert tok.encode("[CLS]")[1] != cls  # a special token typed in the text is text

    pieces, words = tok.encode_words(["Oslo", "Actingfilm", "sang", "in", "Oslo"], max_length=7)
    assert pieces[0] == cls and pieces[-1] == sep and len(pieces) == 7
    assert words == [-1, 0, 1, 1, 1, 1, -1]  # the pieces of "actingfilm" that fit

    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.encode_words(["Actingfilm", "sang"]) == tok.encode_words(["Actingfilm", "sang"])
    assert again.vocab_size == tok.vocab_size and again.kind == "pretrained"


def test_the_gpt2_tokenizer_adds_nothing_and_streams_with_one_bos(gpt2):
    tok = pretrained_tokenizer(gpt2)
    text = "Once upon a time, the cat sat."
    assert tok.decode(tok.encode(text)) == text  # byte-level: exact, no special tokens
    assert tok.bos_id is not None
    stream = tok.encode_stream(text + "\n" + text)
    assert stream[0] == tok.bos_id and stream.count(tok.bos_id) == 1
    assert tok.prompt_ids("") == [tok.bos_id]
    pieces, words = tok.encode_words(["the", "cat"])
    assert tok.decode(pieces) == "the cat" and -1 not in words


def test_tagging_examples_label_each_words_first_piece_and_ignore_specials(bert):
    spec = pretrained("tagging", data={"max_length": 8})
    tok = pretrained_tokenizer(bert)
    prepared = prepare_tagging(spec.data, 0, load_splits(spec, None), tok)
    sep = tok.encode("")[-1]
    for ids, targets in zip(prepared.train.ids[:50], prepared.train.targets[:50], strict=True):
        assert len(ids) <= 8 and ids[-1] == sep  # truncation keeps [SEP]
        assert targets[0] == IGNORE_INDEX and targets[-1] == IGNORE_INDEX
        assert targets[1] != IGNORE_INDEX  # the first word's first piece


# ---------------------------------------------------------------- every task trains


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classification_learns_above_chance(tmp_path, bert, pooling):
    out = Collect(tmp_path)
    train(
        pretrained(model={"pooling": pooling}, training={"epochs": 4}),
        out.reporter(),
        backbone=bert,
    )
    accuracy = out.metric("val", "accuracy")
    assert len(accuracy) == 4 and accuracy[-1] > 0.65, accuracy


@pytest.mark.parametrize("crf", [True, False])
def test_tagging_trains_and_reports_f1(tmp_path, bert, crf):
    out = Collect(tmp_path)
    spec = pretrained("tagging", model={"crf": crf})
    result = train(spec, out.reporter(), backbone=bert)
    assert result.metrics["val/f1"] > 0.5, result.metrics
    state = load_checkpoint(out.paths[-1])
    model = build_model(spec.model, "tagging", 1, len(state["labels"]), 32, backbone=bert)
    load_model_state(model, state["model"])
    model.eval()
    words = ["Alan", "Turing", "visited", "Actingfilm", "in", "Paris"]
    plugin, tok = task_info("tagging").plugin(), tokenizer_from_dict(state["tokenizer"])
    (answer,) = plugin.predict(model, tok, state["labels"], 32, None, [words])
    assert answer["tokens"] == words and len(answer["tags"]) == len(words)
    assert set(answer["tags"]) <= set(state["labels"])


def test_language_modelling_trains_and_generates(tmp_path, gpt2):
    out = Collect(tmp_path)
    spec = pretrained("language_modeling", training={"epochs": 1, "max_steps": 12})
    result = train(spec, out.reporter(), backbone=gpt2)
    assert result.metrics["val/perplexity"] > 1
    state = load_checkpoint(out.paths[-1])
    model = build_model(spec.model, "language_modeling", 1, 2, 32, backbone=gpt2)
    load_model_state(model, state["model"])
    model.eval()
    plugin, tok = task_info("language_modeling").plugin(), tokenizer_from_dict(state["tokenizer"])
    text = plugin.generate(model, tok, "Once upon a time", 12, 1.0, None, 7)
    assert text and text == plugin.generate(model, tok, "Once upon a time", 12, 1.0, None, 7)
    # Greedy decoding with the key/value cache, past the model's 64 positions, equals
    # recomputing every step from the visible window.
    prompt = tok.encode("the cat sat on the mat and")
    fast = model.generate(prompt, 70, top_k=1)  # type: ignore[operator]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(70):
            window = torch.tensor([ids[-64:]])
            ids.append(int(model(window, torch.tensor([window.size(1)]))[0][0, -1].argmax()))
    assert fast == ids[len(prompt) :]


def test_a_bert_cannot_do_language_modelling(bert):
    spec = pretrained("language_modeling", training={"max_steps": 1})
    with pytest.raises(PretrainedModelError, match="cannot do language_modeling"):
        train(spec, _quiet(), backbone=bert)


def _quiet() -> Reporter:
    return Reporter(lambda *a: None, lambda *a, **k: None)


# ---------------------------------------------------------------- what trains


def trained_run(spec: JobSpec, backbone: Path):
    """One epoch through the loop's own setup and epoch, keeping the model to inspect."""
    run = setup(spec, _quiet(), None, None, None, backbone)
    run.model.train()
    train_epoch(run, epoch_order(run), {})
    return run


def base_weights(backbone: Path) -> dict[str, torch.Tensor]:
    return load_file(str(backbone / "model.safetensors"))


def test_freeze_encoder_trains_only_the_head(bert):
    run = trained_run(pretrained(model={"freeze": "encoder"}, training={"epochs": 1}), bert)
    model: Any = run.model
    base = base_weights(bert)
    for name, value in model.encoder.backbone.state_dict().items():
        if name in base:
            assert torch.equal(value, base[name]), name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    assert set(model_state(model)) == trainable  # BERT keeps no persistent buffer


def test_lora_trains_only_adapters_and_head_and_checkpoints_small(tmp_path, bert):
    lora = pretrained(model={"lora": {"r": 4}}, training={"epochs": 1})
    run = trained_run(lora, bert)
    model: Any = run.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable)
    base = base_weights(bert)
    for name, value in model.encoder.backbone.state_dict().items():
        if name in base:  # peft keeps each adapted layer's weight under base_layer
            assert torch.equal(value, base[name]), name
    adapted = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert adapted and any(bool(p.abs().sum() > 0) for p in adapted)  # trained from zero

    sizes = {}
    for name, spec in (("lora", lora), ("full", pretrained(training={"epochs": 1}))):
        out = Collect(tmp_path / name)
        train(spec, out.reporter(), backbone=bert)
        sizes[name] = out.paths[-1].stat().st_size
        state = load_checkpoint(out.paths[-1])
        sizes[f"{name}-tensors"] = len(state["model"])
        rebuilt = build_model(spec.model, "classification", 1, 2, 32, backbone=bert)
        load_model_state(rebuilt, state["model"])  # served from the checkpoint
    assert sizes["lora"] * 3 < sizes["full"], sizes
    assert sizes["lora-tensors"] * 3 < sizes["full-tensors"], sizes


def test_lora_names_the_field_of_a_module_the_model_lacks(bert):
    spec = pretrained(model={"lora": {"target_modules": ["no_such_layer"]}})
    with pytest.raises(PretrainedModelError, match="model.lora.target_modules"):
        build_model(spec.model, "classification", 1, 2, 32, backbone=bert)


# ---------------------------------------------------------------- exact resume


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_resume_after_an_epoch_is_bit_exact(tmp_path, bert, variant):
    model = {"lora": {"r": 4, "dropout": 0.2}} if variant == "lora" else {}
    spec = pretrained(model=model, training={"epochs": 2, "deterministic": True})
    straight = Collect(tmp_path / "straight")
    train(spec, straight.reporter(), backbone=bert)
    resumed = Collect(tmp_path / "resumed")
    train(spec, resumed.reporter(), resume=load_checkpoint(straight.paths[0]), backbone=bert)
    a, b = load_checkpoint(straight.paths[-1]), load_checkpoint(resumed.paths[-1])
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][name]), (key, name)


# ---------------------------------------------------------------- checkpoints and offline


def test_a_scratch_models_state_is_its_whole_state_dict():
    spec = parse_spec(tiny_spec(task="language_modeling", model={"type": "gru"}))
    model = build_model(spec.model, "language_modeling", 50, 2, 32)
    full = model.state_dict()
    assert list(model_state(model)) == list(full)
    load_model_state(model, full)
    with pytest.raises(ValueError, match="unexpected"):
        load_model_state(model, {**full, "stray.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing"):
        load_model_state(model, {k: v for k, v in full.items() if not k.startswith("head.")})


def test_training_opens_no_connection_beyond_the_loopback(monkeypatch, tmp_path, bert):
    outside: list[Any] = []
    original = socket.socket.connect, socket.socket.connect_ex

    def guard(index: int):
        def connect(self: socket.socket, address: Any) -> Any:
            host = address[0] if isinstance(address, tuple) else None
            if self.family in (socket.AF_INET, socket.AF_INET6) and host not in (
                "127.0.0.1",
                "::1",
                "localhost",
            ):
                outside.append(address)
            return original[index](self, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guard(0))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(1))
    train(pretrained(training={"epochs": 1}), Collect(tmp_path).reporter(), backbone=bert)
    assert outside == []
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_gradient_checkpointing_and_frozen_embeddings_train_the_same_steps(bert):
    plain = trained_run(pretrained(model={"freeze": "embeddings"}, training={"epochs": 1}), bert)
    spec = pretrained(
        model={"freeze": "embeddings", "gradient_checkpointing": True}, training={"epochs": 1}
    )
    checkpointed = trained_run(spec, bert)
    model: Any = checkpointed.model
    assert model.encoder.backbone.is_activation_checkpointing
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".embeddings." in n for n in frozen)
    for (name, a), b in zip(
        plain.model.state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), name  # recomputed, not approximated
