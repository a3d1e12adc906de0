"""Batch prediction against /predict, on one trained job, in one run: the same rows
(SST-2 dev, repeated to `--rows`) predicted by a queued output on a worker, and POSTed to
/predict in batches of 32. Prints JSON figures.

    .venv/bin/python -m bench.batch_predict [--rows 8720] [--epochs 1]

Needs ../shared/datasets/sst2 (train.tsv for the job, dev.tsv for the rows).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.service import DATASETS, LocalService

SST2 = {"format": "tsv", "text_column": "sentence", "label_column": "label"}
TERMINAL = ("succeeded", "failed", "cancelled")


def rows_file(rows: int, folder: Path) -> tuple[Path, list[str]]:
    """SST-2 dev's sentences repeated to `rows` rows, as a TSV file; and the texts."""
    dev = (DATASETS / "sst2" / "dev.tsv").read_text().splitlines()
    header, body = dev[0], dev[1:]
    lines = [body[i % len(body)] for i in range(rows)]
    path = folder / "rows.tsv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path, [line.split("\t")[0] for line in lines]


def batch_output(svc: LocalService, job_id: int, reference: str) -> dict[str, Any]:
    started = time.perf_counter()
    output = svc.client.post(f"/api/v1/jobs/{job_id}/predictions", {"dataset": reference})
    while output["status"] not in TERMINAL:
        time.sleep(0.05)
        output = svc.client.get(output["links"]["self"])
    wall = time.perf_counter() - started
    assert output["status"] == "succeeded", output["error"]
    return {
        "rows": output["rows_done"],
        "wall_seconds": round(wall, 3),
        "rows_per_second_wall": round(output["rows_done"] / wall, 1),
        "worker_seconds": output["summary"]["seconds"],
        "rows_per_second_worker": output["summary"]["rows_per_second"],
    }


def predict_in_batches(
    svc: LocalService, job_id: int, texts: list[str], batch: int = 32
) -> dict[str, Any]:
    svc.client.post(f"/api/v1/jobs/{job_id}/predict", {"texts": texts[:1]})  # load the model
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        svc.client.post(f"/api/v1/jobs/{job_id}/predict", {"texts": texts[start : start + batch]})
    wall = time.perf_counter() - started
    return {
        "rows": len(texts),
        "requests": -(-len(texts) // batch),
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(len(texts) / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8720)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, LocalService(workers=1) as svc:
        train = Path(folder) / "train.tsv"
        lines = (DATASETS / "sst2" / "train.tsv").read_text().splitlines()
        train.write_text("\n".join(lines[: args.train_rows + 1]) + "\n")
        train_ref = svc.upload(train, "sst2-train", **SST2)["reference"]
        path, texts = rows_file(args.rows, Path(folder))
        rows_ref = svc.upload(path, "rows", **SST2)["reference"]
        spec = {
            "name": "batch-predict-bench",
            "data": {"dataset": train_ref, "max_length": 64},
            "model": {"type": "bilstm", "embedding_dim": 64, "hidden_size": 128},
            "training": {"epochs": args.epochs, "batch_size": 64},
        }
        job = svc.wait(svc.client.post("/api/v1/jobs", spec)["id"], poll=0.5)
        assert job["status"] == "succeeded", job["error"]
        batch = batch_output(svc, job["id"], rows_ref)
        online = predict_in_batches(svc, job["id"], texts)
    print(
        json.dumps(
            {
                "bench": "batch_predict",
                "model": "bilstm 64/128, SST-2",
                "batch_output": batch,
                "predict_batches_of_32": online,
                "speedup_wall": round(batch["rows_per_second_wall"] / online["rows_per_second"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
