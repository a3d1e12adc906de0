"""Training throughput on SST-2: a textbook PyTorch LSTM recipe vs. Seqtrain's trainer.

Both train one epoch of an Embedding(V, 128) -> LSTM(128, 128) -> Linear(128, 2) classifier
on the 67,349 SST-2 training rows (batch 64, lr 1e-3, max 64 tokens) on 2 CPU threads, each
in its own subprocess of this script, then score the 872 dev rows. samples/s counts the
training epoch only (no file reading, vocabulary building or evaluation).

The baseline pads every sequence to 64 tokens and reads h_n[-1] after the pads, as a
tutorial would; Seqtrain's trainer (worker.trainer.train, called in process, no queue)
uses its word tokenizer, length bucketing, dynamic padding, one dense LSTM call whose states
are read only at real tokens (mean pooling), and gradient clipping inside the fused AdamW step.

    .venv/bin/python bench/trainer_throughput.py [--data DIR]

Progress goes to stderr; the last line of stdout is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sst2"
THREADS, MAX_LEN, BATCH, DIM = 2, 64, 64, 128


def read_tsv(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]  # skip the header
    return [(s.strip(), int(label)) for s, label in (line.split("\t") for line in lines if line)]


class LSTMClassifier(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, DIM, padding_idx=0)
        self.lstm = nn.LSTM(DIM, DIM, batch_first=True)
        self.fc = nn.Linear(DIM, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(self.embedding(x))
        return self.fc(h_n[-1])


def run_baseline(data: Path) -> dict[str, float]:
    train_rows, dev_rows = read_tsv(data / "train.tsv"), read_tsv(data / "dev.tsv")
    vocab = {"<pad>": 0, "<unk>": 1}
    for sentence, _ in train_rows:
        for word in sentence.split():
            vocab.setdefault(word, len(vocab))

    def encode(rows: list[tuple[str, int]]) -> torch.utils.data.TensorDataset:
        ids = [[vocab.get(w, 1) for w in s.split()][:MAX_LEN] for s, _ in rows]
        x = torch.tensor([seq + [0] * (MAX_LEN - len(seq)) for seq in ids])
        return torch.utils.data.TensorDataset(x, torch.tensor([label for _, label in rows]))

    train_set, dev_set = encode(train_rows), encode(dev_rows)
    torch.manual_seed(0)
    model = LSTMClassifier(len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True)
    model.train()
    started = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(dev_set, batch_size=BATCH):
            correct += int((model(x).argmax(-1) == y).sum())
    return {
        "samples_per_s": len(train_set) / seconds,
        "epoch_s": seconds,
        "dev_accuracy": correct / len(dev_set),
        "train_rows": len(train_set),
        "dev_rows": len(dev_set),
    }


def run_seqtrain(data: Path) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from shared.data.examples import Splits
    from shared.data.formats import parse_delimited
    from shared.spec import parse_spec
    from worker.trainer import Reporter, train

    spec = parse_spec(
        {
            "name": "bench-sst2",
            "task": "classification",
            "data": {
                "dataset": "builtin:sentiment",  # placeholder: the rows come from `splits`
                "max_length": MAX_LEN,
                "tokenizer": {"kind": "word", "vocab_size": 30000},
            },
            "model": {
                "type": "lstm",
                "embedding_dim": DIM,
                "hidden_size": DIM,
                "num_layers": 1,
                "dropout": 0.0,
                # Mean of the real tokens' states: no extra parameters, and every word of a
                # phrase reaches the head directly.
                "pooling": "mean",
            },
            # Seqtrain's own recipe beyond the shared sizes: a higher peak rate with warmup
            # and cosine decay (the textbook keeps Adam at a constant 1e-3).
            "training": {"epochs": 1, "batch_size": BATCH, "lr": 0.003, "log_every_steps": 100},
            "checkpoint": {"every_epochs": 1, "keep_last": 1},
        }
    )
    kwargs = {"delimiter": "\t", "text_column": "sentence", "label_column": "label"}
    train_rows = parse_delimited((data / "train.tsv").read_bytes(), **kwargs)
    dev_rows = parse_delimited((data / "dev.tsv").read_bytes(), **kwargs)
    rows: list[dict] = []
    reporter = Reporter(lambda batch, epoch, step: rows.extend(batch), lambda *_: None)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's progress lines
        result = train(spec, reporter, splits=Splits(train=train_rows, validation=dev_rows))
    samples_per_s = result.metrics["train/samples_per_s"]
    return {
        "samples_per_s": samples_per_s,
        "epoch_s": len(train_rows.rows) / samples_per_s,
        "dev_accuracy": result.metrics["val/accuracy"],
        "train_rows": len(train_rows.rows),
        "dev_rows": len(dev_rows.rows),
    }


def run_part(part: str, data: Path) -> dict[str, float]:
    """Run one part in a fresh interpreter; its last stdout line is its JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--data", str(data)]
    print(f"running {part} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dir with train/dev.tsv")
    parser.add_argument("--part", choices=("baseline", "seqtrain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    missing = [p for p in (args.data / "train.tsv", args.data / "dev.tsv") if not p.is_file()]
    if missing:
        print(f"SST-2 not found: missing {', '.join(map(str, missing))}", file=sys.stderr)
        sys.exit(2)
    if args.part:
        torch.set_num_threads(THREADS)
        runner = run_baseline if args.part == "baseline" else run_seqtrain
        print(json.dumps(runner(args.data.resolve())))
        return
    base, seq = run_part("baseline", args.data), run_part("seqtrain", args.data)
    result = {
        "baseline_samples_per_s": round(base["samples_per_s"], 1),
        "seqtrain_samples_per_s": round(seq["samples_per_s"], 1),
        "ratio": round(seq["samples_per_s"] / base["samples_per_s"], 2),
        "baseline_dev_accuracy": round(base["dev_accuracy"], 4),
        "seqtrain_dev_accuracy": round(seq["dev_accuracy"], 4),
        "threads": THREADS,
        "train_rows": base["train_rows"],
        "dev_rows": base["dev_rows"],
        "baseline_epoch_s": round(base["epoch_s"], 1),
        "seqtrain_epoch_s": round(seq["epoch_s"], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
