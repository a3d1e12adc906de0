"""DistributedDataParallel on CPU (gloo): two ranks with batch B take the same steps as one
process with batch 2B, rank 0 alone writes, and a checkpoint resumes at another world size.

The ranks run under torchrun, as in the service: `python -m torch.distributed.run ... -m
tests.test_ddp OUT` trains every spec below and rank 0 writes its loss rows to OUT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from shared.spec import parse_spec
from shared.zoo.checkpoints import load_checkpoint, save_checkpoint
from tests.helpers import tiny_spec
from worker.distributed import end_group
from worker.launch import single_node_options
from worker.trainer import Reporter, train

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
STEPS, PER_RANK_BATCH = 20, 8

# dropout 0: dropout masks are per rank, so only without it is the arithmetic the same.
SPECS: dict[str, dict[str, Any]] = {
    "lstm": tiny_spec(
        model={"type": "lstm", "dropout": 0.0},
        training={"epochs": 2, "max_steps": STEPS, "log_every_steps": 1, "lr": 0.01},
        checkpoint={"every_steps": 5, "keep_last": 50},
    ),
    "transformer": tiny_spec(
        task="language_modeling",
        data={"dataset": "builtin:stories", "max_length": 24, "tokenizer": {"kind": "char"}},
        model={
            "type": "transformer",
            "embedding_dim": 16,
            "nhead": 2,
            "dim_feedforward": 32,
            "dropout": 0.0,
        },
        training={"epochs": 50, "max_steps": STEPS, "log_every_steps": 1, "lr": 0.01},
        checkpoint={"every_steps": 5, "keep_last": 50},
    ),
    # An encoder-decoder: a GRU with attention; each rank's loss is weighed by its share of
    # the global batch's target tokens (BOS is no target), and both ranks decode validation.
    "seq2seq": tiny_spec(
        task="seq2seq",
        data={"dataset": "builtin:dates", "max_length": 24, "tokenizer": {"kind": "char"}},
        model={"type": "gru", "embedding_dim": 16, "hidden_size": 24, "dropout": 0.0},
        training={"epochs": 2, "max_steps": STEPS, "log_every_steps": 1, "lr": 0.01},
        checkpoint={"every_steps": 5, "keep_last": 50},
        decoding={"beam_size": 1, "samples": 0},
    ),
    # A pretrained encoder (tiny BERT, its own dropout off) with LoRA adapters and a head.
    "pretrained": {
        **tiny_spec(training={"epochs": 2, "max_steps": STEPS, "log_every_steps": 1, "lr": 0.01}),
        "model": {
            "type": "pretrained",
            "pretrained": "tiny",
            "dropout": 0.0,
            "lora": {"r": 4, "dropout": 0.0},
        },
        "checkpoint": {"every_steps": 5, "keep_last": 50},
    },
}
BACKBONE_ENV = "SEQTRAIN_TEST_BACKBONE"
# The tiny BERT's folder for the single-process runs (the ranks read BACKBONE_ENV).
BUILT: dict[str, Path] = {}


def backbone_for(name: str) -> Path | None:
    if name != "pretrained":
        return None
    return Path(os.environ[BACKBONE_ENV]) if BACKBONE_ENV in os.environ else BUILT["bert"]


def build_backbone(folder: Path) -> Path:
    """A tiny BERT over the sentiment words, without dropout (masks differ by rank)."""
    from shared.data.datasets import BUILTIN_DATASETS, load
    from tests.hfmodels import tiny_bert

    rows = load(BUILTIN_DATASETS["sentiment"], None).rows  # type: ignore[arg-type]
    bert = tiny_bert(folder, [w for r in rows for w in r["text"].replace(",", " ").split()])
    config = json.loads((bert / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (bert / "config.json").write_text(json.dumps(config))
    return bert


def with_batch(spec: dict[str, Any], batch_size: int) -> dict[str, Any]:
    return {**spec, "training": {**spec["training"], "batch_size": batch_size}}


class Collect:
    def __init__(self, folder: Path | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.saved: list[Path] = []
        self.folder = folder

    def reporter(self) -> Reporter:
        return Reporter(lambda rows, epoch, step: self.rows.extend(rows), self.save)

    def save(self, state: dict[str, Any], epoch: int, step: int, metrics: Any, is_best: bool):
        if self.folder is None:
            return
        path = self.folder / f"step-{step:04d}-{state['next_batch']}.safetensors"
        save_checkpoint(path, state)
        self.saved.append(path)

    def losses(self) -> list[float]:
        """The per-step training losses (written with the learning rate, unlike epoch ends)."""
        per_step = [r for r in self.rows if r["split"] == "train" and r["name"] in ("loss", "lr")]
        return [
            row["value"]
            for row, following in zip(per_step, per_step[1:], strict=False)
            if row["name"] == "loss" and following["name"] == "lr"
        ]


def rank_main(out: Path) -> None:
    """One rank under torchrun: train every spec with batch B per rank; rank 0 reports."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    results = {}
    for name, raw in SPECS.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        collect = Collect(folder)
        spec = parse_spec(with_batch(raw, PER_RANK_BATCH))
        train(spec, collect.reporter(), backbone=backbone_for(name))
        results[name] = {"losses": collect.losses(), "saved": [str(p) for p in collect.saved]}
    (out / f"rank-{rank}.json").write_text(json.dumps(results))
    end_group(0)  # together, as the trainer does: a rank leaving early aborts its peer's gloo


def torchrun(out: Path, nproc: int = 2) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *single_node_options(nproc),
        "-m",
        "tests.test_ddp",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env[BACKBONE_ENV] = str(build_backbone(out / "bert"))
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun(out)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-4000:]
    BUILT["bert"] = out / "bert"
    return out, json.loads((out / "rank-0.json").read_text())


@pytest.mark.parametrize("name", list(SPECS))
def test_two_ranks_take_the_steps_of_one_process_with_twice_the_batch(two_ranks, name):
    torch.set_num_threads(1)
    _, ranked = two_ranks
    single = Collect()
    spec = parse_spec(with_batch(SPECS[name], 2 * PER_RANK_BATCH))
    train(spec, single.reporter(), backbone=backbone_for(name))
    expected, got = single.losses(), ranked[name]["losses"]
    assert len(expected) == len(got) == STEPS
    worst = max(abs(a - b) / abs(a) for a, b in zip(expected, got, strict=True))
    assert worst <= 1e-5, f"relative loss difference {worst:.2e}\n{expected}\n{got}"


def test_rank_zero_alone_writes(two_ranks):
    out, ranked = two_ranks
    assert (out / "rank-1.json").exists()
    other = json.loads((out / "rank-1.json").read_text())
    for name in SPECS:
        assert ranked[name]["losses"] and ranked[name]["saved"]
        assert other[name] == {"losses": [], "saved": []}


def test_a_checkpoint_resumes_with_another_world_size(two_ranks, tmp_path):
    """Saved by 2 ranks (global batch 2B) after 5 steps; one process (batch B) finishes the
    epoch on exactly the examples the saved epoch had left."""
    torch.set_num_threads(1)
    _, ranked = two_ranks
    mid = [Path(p) for p in ranked["lstm"]["saved"]]
    state = load_checkpoint(mid[0])
    assert (state["world_size"], state["global_batch"], state["next_batch"]) == (2, 16, 5)
    spec = parse_spec(
        with_batch(
            {**SPECS["lstm"], "training": {**SPECS["lstm"]["training"], "max_steps": None}},
            PER_RANK_BATCH,
        )
    )
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 1})})
    resumed = Collect(tmp_path)
    result = train(spec, resumed.reporter(), resume=state)
    train_rows = 640  # builtin:sentiment: 800 rows, 20% held out
    assert result.step == 5 + (train_rows - 5 * 16) // PER_RANK_BATCH
    final = load_checkpoint(resumed.saved[-1])
    assert final["world_size"] == 1 and final["global_batch"] == PER_RANK_BATCH


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
