"""The artifact store: a local directory against an S3 bucket (a real SeaweedFS on the
loopback, started here), in one run. Prints one JSON object.

1. A 90 MB checkpoint (an LSTM's weights with its Adam state, as the trainer writes them):
   save (safetensors to a staged file, then commit: the rename, or the verified multipart
   upload) and load (read in place, or download then read), median of --repeats each.
2. The workers' local cache on the S3 store: --jobs jobs on one uploaded dataset through
   the service (gunicorn API, --workers Celery workers, each with its own cache directory
   and no shared directory), and each cache's hits and misses.

    .venv/bin/python bench/storage.py [--repeats 5] [--jobs 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.service import LocalService  # noqa: E402
from cli import services  # noqa: E402
from shared.infra.cache import LocalCache  # noqa: E402
from shared.infra.s3 import S3Store  # noqa: E402
from shared.infra.storage import ArtifactStore, LocalStore  # noqa: E402
from shared.zoo.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint  # noqa: E402

JOB_SPEC: dict[str, Any] = {
    "task": "classification",
    "data": {"max_length": 32},
    "model": {"type": "gru", "embedding_dim": 16, "hidden_size": 16},
    "training": {"epochs": 1, "max_steps": 3, "batch_size": 32},
    "checkpoint": {"every_epochs": 1, "keep_last": 1},
}


def checkpoint_state(target_bytes: int) -> dict[str, Any]:
    """A trainer-shaped state: an LSTM's weights and Adam's two moments (3 x the weights)."""
    hidden = 1
    while 3 * 4 * (4 * hidden * (2 * hidden + 2)) * 2 < target_bytes:
        hidden += 16
    model = torch.nn.LSTM(hidden, hidden, num_layers=2)
    weights = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    moments = {
        f"optimizer.{which}.{k}": torch.randn_like(v)
        for k, v in weights.items()
        for which in ("exp_avg", "exp_avg_sq")
    }
    return {
        "format": CHECKPOINT_FORMAT,
        "tensors": {**weights, **moments},
        "step": 100,
        "next_batch": 0,
    }


def time_store(store: ArtifactStore, state: dict[str, Any], scratch: Path, repeats: int) -> dict:
    saves, loads, size = [], [], 0
    for index in range(repeats):
        key = f"bench/checkpoints/step-{index:04d}.safetensors"
        started = time.perf_counter()
        staging = store.staging_path(key)
        save_checkpoint(staging, state)
        size, _ = store.commit(staging, key)
        saves.append(time.perf_counter() - started)
        started = time.perf_counter()
        with store.local_copy(key, scratch) as path:
            loaded = load_checkpoint(path)
            for tensor in loaded["tensors"].values():  # read every byte, not just map it
                tensor.sum()
        loads.append(time.perf_counter() - started)
        assert torch.equal(
            loaded["tensors"]["model.weight_ih_l0"], state["tensors"]["model.weight_ih_l0"]
        )
        store.delete(key)
    return {
        "checkpoint_mb": round(size / 1e6, 1),
        "save_s_median": round(statistics.median(saves), 3),
        "load_s_median": round(statistics.median(loads), 3),
        "save_mb_per_s": round(size / 1e6 / statistics.median(saves), 1),
        "load_mb_per_s": round(size / 1e6 / statistics.median(loads), 1),
    }


def checkpoints(repeats: int, megabytes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, server = services.start_seaweedfs(folder / "seaweedfs")
        try:
            os.environ.update(server.env())
            s3 = S3Store(
                "s3://seqtrain/bench", folder / "scratch", endpoint_url=server.endpoint_url
            )
            local = LocalStore(folder / "artifacts")
            state = checkpoint_state(megabytes * 1_000_000)
            figures = {
                "local": time_store(local, state, folder, repeats),
                "s3": time_store(s3, state, folder, repeats),
            }
        finally:
            services.stop_seaweedfs(proc)
    figures["s3_over_local_save"] = round(
        figures["s3"]["save_s_median"] / figures["local"]["save_s_median"], 2
    )
    figures["s3_over_local_load"] = round(
        figures["s3"]["load_s_median"] / figures["local"]["load_s_median"], 2
    )
    return figures


def dataset_rows(count: int) -> bytes:
    words = ["good", "bad", "great", "awful", "fine", "dull", "superb", "poor"]
    lines = ["text\tlabel"]
    for i in range(count):
        first, second = words[i % 8], words[(i * 5 + 3) % 8]
        lines.append(
            f"a {first} and {second} film number {i}\t{'pos' if i % 8 in (0, 2, 4, 6) else 'neg'}"
        )
    return ("\n".join(lines) + "\n").encode()


def cache_hits(jobs: int, workers: int) -> dict[str, Any]:
    with LocalService(workers=workers, store="s3", env={"SEQTRAIN_TORCH_THREADS": "1"}) as svc:
        dataset = svc.client.upload(
            "/api/v1/datasets",
            "reviews.tsv",
            dataset_rows(4000),
            {"name": "reviews", "format": "tsv", "text_column": "text", "label_column": "label"},
        )
        spec = dict(JOB_SPEC, data=dict(JOB_SPEC["data"], dataset=f"dataset:{dataset['id']}"))
        started = time.monotonic()
        ids = [
            svc.client.post("/api/v1/jobs", dict(spec, name=f"cached-{i}"))["id"]
            for i in range(jobs)
        ]
        finished = [svc.wait(job_id, poll=0.5) for job_id in ids]
        elapsed = time.monotonic() - started
        caches = [LocalCache(path, 1 << 30).stats() for path in svc.cache_dirs]
    hits = sum(c.get("hits", 0) for c in caches)
    misses = sum(c.get("misses", 0) for c in caches)
    return {
        "jobs": jobs,
        "workers": workers,
        "succeeded": sum(job["status"] == "succeeded" for job in finished),
        "other_statuses": sorted({job["status"] for job in finished} - {"succeeded"}),
        "cache_hits": hits,
        "cache_misses": misses,
        "hit_rate": round(hits / max(1, hits + misses), 3),
        "per_worker": caches,
        "wall_s": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=90)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = {
        "checkpoint": checkpoints(args.repeats, args.megabytes),
        "cache": cache_hits(args.jobs, args.workers),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
