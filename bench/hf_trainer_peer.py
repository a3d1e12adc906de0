"""The peer for bench/pretrained.py: Hugging Face's own `Trainer` fine-tuning the same model
on the same SST-2 rows, maximum length, batch size and one epoch, with its default dynamic
padding (`DataCollatorWithPadding`) or with `group_by_length=True`. Prints one JSON line.

    .venv/bin/python -m bench.hf_trainer_peer --model DIR --train train.tsv --dev dev.tsv \\
        --max-length 64 --batch-size 32 [--group-by-length]

Offline: the model directory is local and HF_HUB_OFFLINE is set before transformers loads.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


class Encoded:
    """A list-backed dataset of tokenized examples (what `Trainer` takes)."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: list[int]) -> None:
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {k: v[index] for k, v in self.encodings.items()}
        item["labels"] = self.labels[index]
        return item


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-by-length", action="store_true")
    args = parser.parse_args()

    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(args.model), local_files_only=True)
    texts, labels = read_tsv(args.train)
    dev_texts, dev_labels = read_tsv(args.dev)

    def encode(batch: list[str]) -> dict[str, list[list[int]]]:
        return dict(tokenizer(batch, truncation=True, max_length=args.max_length))

    train, dev = Encoded(encode(texts), labels), Encoded(encode(dev_texts), dev_labels)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(args.model), num_labels=2, local_files_only=True
    )
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            num_train_epochs=1,
            learning_rate=args.lr,
            weight_decay=0.01,
            warmup_steps=0.06,  # a float below 1: the ratio of all steps
            lr_scheduler_type="linear",
            # Trainer's `group_by_length=True` (named train_sampling_strategy since v5).
            train_sampling_strategy="group_by_length" if args.group_by_length else "random",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to=[],
            seed=args.seed,
            dataloader_num_workers=0,
            use_cpu=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        predictions = trainer.predict(dev)
    accuracy = float((np.argmax(predictions.predictions, -1) == np.array(dev_labels)).mean())
    print(
        json.dumps(
            {
                "peer": "transformers.Trainer",
                "group_by_length": args.group_by_length,
                "train_examples": len(train),
                "train_seconds": round(seconds, 1),
                "samples_per_s": round(len(train) / seconds, 2),
                "trainer_samples_per_s": result.metrics.get("train_samples_per_second"),
                "dev_accuracy": round(accuracy, 4),
                "optim": str(training_args.optim),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
