"""A sweep with ASHA against the same configurations trained fully, in one run: SST-2 with
an LSTM classifier, a grid of 16 configurations over lr, hidden size, dropout and pooling,
3 epochs each, on 2 workers (one thread each). Both sweeps go through the service (POST
/api/v1/sweeps); the grid sampler gives both the same 16 configurations, and
`deterministic: true` makes a configuration that ASHA trains to the end train exactly as in
the full sweep. Prints one JSON line per sweep and a summary line.

    .venv/bin/python -m bench.sweep [--epochs 3] [--rung 0.3333]

`--rung`: ASHA's first rung as a fraction of an epoch (in optimizer steps), reduction
factor 3: rungs at 1/3 epoch, 1 epoch and 3 epochs. Needs ../shared/datasets/sst2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench.service import DATASETS, LocalService

SST2 = {"format": "tsv", "text_column": "sentence", "label_column": "label"}
TRAIN_ROWS = 67_349
BATCH = 64


def base_spec(epochs: int) -> dict[str, Any]:
    return {
        "name": "sst2-lstm",
        "task": "classification",
        "data": {
            "dataset": "sst2-train",
            "validation_dataset": "sst2-dev",
            "max_length": 64,
            "tokenizer": {"kind": "word", "vocab_size": 16000},
        },
        "model": {"type": "lstm", "embedding_dim": 128, "hidden_size": 128, "num_layers": 1},
        "training": {"epochs": epochs, "batch_size": BATCH, "lr": 0.002, "deterministic": True},
        "checkpoint": {"keep_last": 2},
    }


PARAMETERS = {
    "training.lr": {"type": "categorical", "choices": [0.002, 0.006]},
    "model.hidden_size": {"type": "int", "low": 64, "high": 192, "step": 128},
    "model.dropout": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.4},
    "model.pooling": {"type": "categorical", "choices": ["mean", "attention"]},
}


def run_sweep(svc: LocalService, name: str, epochs: int, pruner: dict[str, Any]) -> dict[str, Any]:
    request = {
        "name": name,
        "spec": base_spec(epochs),
        "parameters": PARAMETERS,
        "objective": {"metric": "val/accuracy", "direction": "maximize"},
        "max_trials": 16,
        "max_parallel": 2,
        "sampler": "grid",
        "pruner": pruner,
        "seed": 0,
    }
    started = time.perf_counter()
    sweep = svc.client.post("/api/v1/sweeps", request)
    while sweep["status"] == "running":
        time.sleep(2)
        sweep = svc.client.get(f"/api/v1/sweeps/{sweep['id']}")
    wall = time.perf_counter() - started
    trials = sweep["trials"]
    return {
        "sweep": name,
        "status": sweep["status"],
        "error": sweep["error"],
        "pruner": pruner,
        "trials": len(trials),
        "counts": sweep["counts"],
        "best_value": (sweep["best_trial"] or {}).get("value"),
        "best_params": (sweep["best_trial"] or {}).get("params"),
        "epochs_trained": round(sum(t["epochs_trained"] for t in trials), 3),
        "epochs_planned": 16 * epochs,
        "wall_s": round(wall, 1),
        "values": {
            json.dumps(t["params"], sort_keys=True): [t["status"], t["value"], t["epochs_trained"]]
            for t in trials
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rung", type=float, default=1 / 3)
    args = parser.parse_args()
    if not (DATASETS / "sst2").exists():
        print(f"{DATASETS / 'sst2'} is not present", file=sys.stderr)
        sys.exit(2)
    steps_per_epoch = -(-TRAIN_ROWS // BATCH)
    rung = max(1, round(steps_per_epoch * args.rung))
    env = {"SEQTRAIN_TORCH_THREADS": "1", "SEQTRAIN_RECONCILE_SECONDS": "2"}
    with LocalService(workers=2, env=env) as svc:
        svc.upload(DATASETS / "sst2" / "train.tsv", "sst2-train", **SST2)
        svc.upload(DATASETS / "sst2" / "dev.tsv", "sst2-dev", **SST2)
        asha = run_sweep(
            svc,
            "asha",
            args.epochs,
            {"type": "asha", "unit": "steps", "min_resource": rung, "reduction_factor": 3},
        )
        print(json.dumps(asha), flush=True)
        full = run_sweep(svc, "full", args.epochs, {"type": "none"})
        print(json.dumps(full), flush=True)
    summary = {
        "asha_best": asha["best_value"],
        "full_best": full["best_value"],
        "best_gap": round(full["best_value"] - asha["best_value"], 4),
        "asha_epochs": asha["epochs_trained"],
        "full_epochs": full["epochs_trained"],
        "epochs_ratio": round(asha["epochs_trained"] / full["epochs_trained"], 3),
        "asha_wall_s": asha["wall_s"],
        "full_wall_s": full["wall_s"],
        "wall_ratio": round(asha["wall_s"] / full["wall_s"], 3),
        "rung_steps": rung,
        "workers": 2,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
