"""Resident memory of the service's long-lived processes, and whether torch is mapped into
them: the gunicorn API (master and workers, after serving job requests but no prediction)
and the Celery worker (after supervising a job to its end). The worker's warm fork-server,
which imports torch by design so that trainers start warm, is reported on its own. Prints
one JSON object (MiB).

    .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service import LocalService, children  # noqa: E402

SPEC: dict[str, Any] = {
    "name": "memory",
    "model": {"type": "gru", "embedding_dim": 16, "hidden_size": 16},
    "training": {"epochs": 1, "max_steps": 3},
}


def is_forkserver(pid: int) -> bool:
    return b"worker.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()


def process(pid: int) -> dict[str, Any]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {
        "pid": pid,
        "rss_mib": round(rss_kib / 1024, 1),
        "torch_mapped": "libtorch" in maps or "/torch/" in maps,
    }


def main() -> None:
    with LocalService(workers=1) as svc:
        job_id = svc.client.post("/api/v1/jobs", SPEC)["id"]
        job = svc.wait(job_id, poll=0.2)
        assert job["status"] == "succeeded", job["error"]
        for _ in range(50):
            svc.client.get("/api/v1/jobs")
            svc.client.get(f"/api/v1/jobs/{job_id}")
        api_master, worker = svc.procs[0].pid, svc.procs[1].pid
        api = [process(api_master)] + [process(pid) for pid in children(api_master)]
        helpers = children(worker)
        celery = [process(worker)] + [process(p) for p in helpers if not is_forkserver(p)]
        forkserver = [process(p) for p in helpers if is_forkserver(p)]
    print(
        json.dumps(
            {
                "api": {
                    "processes": api,
                    "rss_mib_total": round(sum(p["rss_mib"] for p in api), 1),
                },
                "worker": {
                    "processes": celery,
                    "rss_mib_total": round(sum(p["rss_mib"] for p in celery), 1),
                },
                "forkserver": {"processes": forkserver},
                "torch_in_api_or_worker": any(p["torch_mapped"] for p in api + celery),
            }
        )
    )


if __name__ == "__main__":
    main()
