"""DDP scaling on CPU: SST-2 LSTM classifier samples/s with 1 and 2 gloo processes.

Each configuration runs under torchrun (as the service launches a multi-device job), with
per-rank batch 64, Embedding(V, 128) -> LSTM(128, 128) -> Linear(128, 2), max 64 tokens,
for STEPS optimizer steps; samples/s counts every rank's samples over the timed steps (the
first log window, warm-up, is left out). Configurations: 1 process x 1 thread, 1 process x
2 threads, 2 processes x 1 thread (the same cores, shared out).

    .venv/bin/python bench/ddp_scaling.py [--data DIR] [--steps N]

Needs SST-2 (../shared/datasets/sst2/train.tsv and dev.tsv); without it, it says so and
exits 0 having measured nothing. Progress goes to stderr; the last line of stdout is one
JSON object of figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from worker.launch import single_node_options

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sst2"
BATCH, DIM, MAX_LEN, LOG_EVERY = 64, 128, 64, 20


def rank_main(data: Path, steps: int, out: Path) -> None:
    """One rank (under torchrun): train, and on rank 0 write the throughput figures."""
    sys.path.insert(0, str(ROOT))
    import torch

    from shared.data.examples import Splits
    from shared.data.formats import parse_delimited
    from shared.spec import parse_spec
    from worker.distributed import init_distributed, rank_and_world
    from worker.trainer import Reporter, train

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    init_distributed()
    spec = parse_spec(
        {
            "name": "bench-ddp",
            "data": {"max_length": MAX_LEN, "tokenizer": {"kind": "word", "vocab_size": 30000}},
            "model": {"type": "lstm", "embedding_dim": DIM, "hidden_size": DIM, "dropout": 0.0},
            "training": {
                "epochs": 1,
                "max_steps": steps,
                "batch_size": BATCH,
                "lr": 0.003,
                "log_every_steps": LOG_EVERY,
            },
        }
    )
    options = {"delimiter": "\t", "text_column": "sentence", "label_column": "label"}
    splits = Splits(
        train=parse_delimited((data / "train.tsv").read_bytes(), **options),
        validation=parse_delimited((data / "dev.tsv").read_bytes(), **options),
    )
    rows: list[dict] = []
    reporter = Reporter(lambda batch, epoch, step: rows.extend(batch), lambda *_: None)
    with contextlib.redirect_stdout(sys.stderr):
        train(spec, reporter, splits=splits)
    rank, world = rank_and_world()
    if rank == 0:
        # Per-window rates (already summed over the ranks); the first window is warm-up.
        rates = [r["value"] for r in rows if r["name"] == "samples_per_s" and r["step"] > LOG_EVERY]
        # The harmonic mean: samples over seconds, each window holding the same samples.
        per_s = len(rates) / sum(1 / r for r in rates)
        out.write_text(json.dumps({"samples_per_s": per_s, "world_size": world}))


def run(data: Path, steps: int, processes: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *single_node_options(processes),
            str(Path(__file__).resolve()),
            "--rank",
            "--data",
            str(data),
            "--steps",
            str(steps),
            "--out",
            str(out),
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
        subprocess.run(command, check=True, env=env, stdout=sys.stderr, cwd=ROOT)
        result: float = json.loads(out.read_text())["samples_per_s"]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dir with train/dev.tsv")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    missing = [p for p in (args.data / "train.tsv", args.data / "dev.tsv") if not p.is_file()]
    if missing:
        message = f"SST-2 not found (missing {', '.join(map(str, missing))}); nothing measured"
        print(message, file=sys.stderr)
        print(json.dumps({"skipped": message}))
        return
    if args.rank:
        rank_main(args.data.resolve(), args.steps, args.out)
        return
    figures = {
        "1proc_1thread": run(args.data, args.steps, 1, 1),
        "1proc_2threads": run(args.data, args.steps, 1, 2),
        "2proc_1thread": run(args.data, args.steps, 2, 1),
    }
    result = {f"{k}_samples_per_s": round(v, 1) for k, v in figures.items()}
    result.update(
        speedup_2proc_vs_1proc_1thread=round(
            figures["2proc_1thread"] / figures["1proc_1thread"], 2
        ),
        speedup_2proc_vs_1proc_2threads=round(
            figures["2proc_1thread"] / figures["1proc_2threads"], 2
        ),
        steps=args.steps,
        per_rank_batch=BATCH,
        cpus=os.cpu_count(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
