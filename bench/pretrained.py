"""Fine-tuning a real pretrained model through the service: all-MiniLM-L6-v2 (a 22.7M
parameter BERT, ../shared/models) uploaded through the API as a user would, then SST-2 and
CoNLL-2003 jobs through the queue, beside Hugging Face's own Trainer. One JSON line per
experiment, then a summary line (seconds; samples/s over the training epochs only).

    .venv/bin/python -m bench.pretrained [--train-rows 20000] [--peer-rows 6000] [--lr 1e-4] \\
        sst2 lora peer conll latency memory

sst2     full fine-tuning, --epochs (1) over the first --train-rows SST-2 training rows; dev
         accuracy, wall time, samples/s, checkpoint size
lora     the same with LoRA (r 8): accuracy, trainable parameters, checkpoint size, samples/s
peer     Seqtrain, then transformers.Trainer (bench/hf_trainer_peer.py) with its default dynamic
         padding and with group_by_length, on the same first --peer-rows rows, length, batch,
         learning rate and one epoch; samples/s ratios and dev accuracies
conll    CoNLL-2003 tagging (word-level CRF on the first sub-tokens), dev entity F1
latency  POST -> first optimizer step of 10 MiniLM jobs on builtin:sentiment (a warm worker)
memory   resident memory of the API's worker process before and after one prediction
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.service import DATASETS, ROOT, LocalService, children

MODEL_ZIP = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2.zip"
SST2 = {"format": "tsv", "text_column": "sentence", "label_column": "label"}


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def spec_for(task: str, dataset: str, dev: str, args: argparse.Namespace, **model: Any) -> dict:
    return {
        "name": f"minilm-{task}",
        "task": task,
        "data": {"dataset": dataset, "validation_dataset": dev, "max_length": args.max_length},
        "model": {"type": "pretrained", "pretrained": "minilm", **model},
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "log_every_steps": 50,
        },
        "checkpoint": {"keep_last": 1},
    }


def train_job(svc: LocalService, spec: dict[str, Any], metric: str) -> dict[str, Any]:
    """Submit, wait, and read what the figures need from the API."""
    job = svc.wait(svc.client.post("/api/v1/jobs", spec)["id"], poll=2.0)
    name = metric.split("/")[1]
    series = svc.client.get(f"/api/v1/jobs/{job['id']}/metrics?split=val&name={name}")
    speed = svc.client.get(
        f"/api/v1/jobs/{job['id']}/metrics?split=train&name=samples_per_s&limit=1000"
    )
    epoch_speed = [m["value"] for m in speed["metrics"] if m["step"] == job["step"]]
    checkpoints = svc.client.get(f"/api/v1/jobs/{job['id']}/checkpoints")["checkpoints"]
    estimate = job.get("estimate") or {}
    return {
        "job": job["id"],
        "status": job["status"],
        "error": job["error"],
        "metric": metric,
        "best": max((m["value"] for m in series["metrics"]), default=None),
        "steps": job["step"],
        "training_s": round(seconds_between(job["started_at"], job["finished_at"]), 1),
        "samples_per_s": round(epoch_speed[-1], 2) if epoch_speed else None,
        "parameters": estimate.get("parameters"),
        "trainable_parameters": estimate.get("trainable_parameters"),
        "checkpoint_bytes": max((c["bytes"] for c in checkpoints), default=None),
    }


def first_rows(path: Path, rows: int, out: Path) -> Path:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return out


def peer(model_dir: Path, train: Path, dev: Path, args: argparse.Namespace, grouped: bool) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench.hf_trainer_peer",
        "--model",
        str(model_dir),
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--max-length",
        str(args.max_length),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
    ] + (["--group-by-length"] if grouped else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"peer": "transformers.Trainer", "error": done.stderr[-2000:]}
    return dict(json.loads(lines[-1]))


def latency(svc: LocalService, runs: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "minilm-latency",
        "task": "classification",
        "data": {"dataset": "builtin:sentiment", "max_length": 32},
        "model": {"type": "pretrained", "pretrained": "minilm"},
        "training": {"epochs": 1, "max_steps": 2, "batch_size": 16, "log_every_steps": 1},
        "checkpoint": {"keep_last": 1},
    }
    to_running, to_step = [], []
    for index in range(runs + 1):
        posted = time.time()
        job = svc.wait(svc.client.post("/api/v1/jobs", spec)["id"], poll=0.05)
        assert job["status"] == "succeeded", job["error"]
        rows = svc.client.get(f"/api/v1/jobs/{job['id']}/metrics?split=train&name=loss&limit=1")
        first = rows["metrics"][0]
        if index == 0:
            continue  # the first job unpacks the base model into the worker's cache
        started = datetime.fromisoformat(job["started_at"]).timestamp()
        to_running.append(started - posted)
        to_step.append(datetime.fromisoformat(first["ts"]).timestamp() - posted)
    return {
        "experiment": "latency",
        "runs": runs,
        "post_to_running_p50_s": round(statistics.median(to_running), 3),
        "post_to_first_step_p50_s": round(statistics.median(to_step), 3),
        "post_to_first_step_max_s": round(max(to_step), 3),
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory(svc: LocalService, job_id: int) -> dict[str, Any]:
    workers = children(svc.procs[0].pid)  # gunicorn's worker processes
    before = {pid: rss_bytes(pid) for pid in workers}
    answer = svc.client.post(f"/api/v1/jobs/{job_id}/predict", {"texts": ["a fine, moving film"]})
    after = {pid: rss_bytes(pid) for pid in workers}
    grown = max(workers, key=lambda pid: after[pid] - before[pid])
    return {
        "experiment": "memory",
        "prediction": answer["predictions"][0]["label"],
        "api_worker_rss_before_mb": round(before[grown] / 2**20, 1),
        "api_worker_rss_after_mb": round(after[grown] / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "parts", nargs="*", default=["sst2", "lora", "peer", "conll", "latency", "memory"]
    )
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--peer-rows", type=int, default=6000)
    parser.add_argument(
        "--epochs", type=int, default=1, help="sst2, lora and conll (the peer trains one)"
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    if not MODEL_ZIP.exists():
        sys.exit(f"{MODEL_ZIP} is absent: this bench needs the pretrained model folder")
    results: list[dict[str, Any]] = []

    def emit(result: dict[str, Any]) -> None:
        results.append(result)
        print(json.dumps(result), flush=True)

    with tempfile.TemporaryDirectory() as tmp, LocalService(workers=1) as svc:
        scratch = Path(tmp)
        started = time.perf_counter()
        model = svc.client.upload(
            "/api/v1/models", MODEL_ZIP.name, MODEL_ZIP.read_bytes(), {"name": "minilm"}
        )
        emit(
            {
                "experiment": "upload",
                "seconds": round(time.perf_counter() - started, 2),
                **{
                    k: model[k] for k in ("id", "model_type", "parameters", "layers", "hidden_size")
                },
            }
        )
        train = first_rows(DATASETS / "sst2/train.tsv", args.train_rows, scratch / "train.tsv")
        svc.upload(train, "sst2-train", **SST2)
        svc.upload(DATASETS / "sst2/dev.tsv", "sst2-dev", **SST2)
        full: dict[str, Any] | None = None
        if "sst2" in args.parts or "memory" in args.parts:
            full = train_job(
                svc, spec_for("classification", "sst2-train", "sst2-dev", args), "val/accuracy"
            )
            emit({"experiment": "sst2", "train_rows": args.train_rows, **full})
        if "lora" in args.parts:
            lora = spec_for("classification", "sst2-train", "sst2-dev", args, lora={"r": 8})
            lora["training"]["lr"] = args.lr * 10  # adapters take a larger step
            emit({"experiment": "sst2-lora", **train_job(svc, lora, "val/accuracy")})
        if "peer" in args.parts:
            # Seqtrain and the peer, one after the other, on the first --peer-rows rows.
            rows = first_rows(DATASETS / "sst2/train.tsv", args.peer_rows, scratch / "peer.tsv")
            svc.upload(rows, "sst2-peer", **SST2)
            one_epoch = argparse.Namespace(**{**vars(args), "epochs": 1})
            ours = train_job(
                svc, spec_for("classification", "sst2-peer", "sst2-dev", one_epoch), "val/accuracy"
            )
            emit({"experiment": "peer-seqtrain", "train_rows": args.peer_rows, **ours})
            model_dir = scratch / "model"
            with zipfile.ZipFile(MODEL_ZIP) as archive:
                archive.extractall(model_dir)
            for grouped in (False, True):
                result = peer(model_dir, rows, DATASETS / "sst2/dev.tsv", args, grouped)
                if result.get("samples_per_s") and ours.get("samples_per_s"):
                    result["seqtrain_speedup"] = round(
                        ours["samples_per_s"] / result["samples_per_s"], 3
                    )
                emit({"experiment": "peer", **result})
        if "conll" in args.parts:
            svc.upload(DATASETS / "conll2003/train.txt", "conll-train", format="conll")
            svc.upload(DATASETS / "conll2003/dev.txt", "conll-dev", format="conll")
            conll = spec_for("tagging", "conll-train", "conll-dev", args, crf=True)
            conll["data"]["max_length"] = 128
            emit({"experiment": "conll", **train_job(svc, conll, "val/f1")})
        if "latency" in args.parts:
            emit(latency(svc, 10))
        if "memory" in args.parts and full is not None:
            emit(memory(svc, full["job"]))
    print(json.dumps({"summary": results}), flush=True)


if __name__ == "__main__":
    main()
