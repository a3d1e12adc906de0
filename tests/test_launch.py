"""worker.launch: the trainer child's command, and a 2-rank gloo job run through it against a
real database: rank 0 alone writes metrics and checkpoints, a rank's failure is the exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared import jobs
from shared.spec import parse_spec
from tests.conftest import ROOT
from tests.helpers import tiny_spec
from worker.devices import DeviceInfo
from worker.launch import NodePlan, trainer_command

pytestmark = pytest.mark.e2e

CPUS = DeviceInfo("cpu", 2, [{"index": i, "name": "cpu", "memory_bytes": 1 << 33} for i in (0, 1)])


def test_one_device_runs_the_trainer_directly():
    spec = parse_spec(tiny_spec())
    argv, env = trainer_command(spec, 7, 2, CPUS)
    assert argv == [sys.executable, "-m", "worker.trainer", "--job-id", "7", "--attempt", "2"]
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_several_devices_run_torchrun_on_loopback():
    spec = parse_spec(tiny_spec(resources={"devices": 2}))
    argv, env = trainer_command(spec, 7, 2, CPUS)
    assert argv[1:3] == ["-m", "worker.launch"]
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert options["--nproc-per-node"] == "2" and options["--nnodes"] == "1"
    assert options["--rdzv-endpoint"] == "127.0.0.1:0" and options["--local-addr"] == "127.0.0.1"
    assert options["--max-restarts"] == "0"
    assert argv[-6:] == ["-m", "worker.trainer", "--job-id", "7", "--attempt", "2"]
    assert int(env["OMP_NUM_THREADS"]) >= 1
    gpus = DeviceInfo("cuda", 4, [{"memory_bytes": 1}] * 4, visible=["3", "5", "6", "7"])
    assert trainer_command(spec, 7, 2, gpus)[1]["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_a_node_of_a_multi_node_job_meets_node_0_at_its_reserved_endpoint():
    # Even one device a node goes through torchrun's agent: the ranks span the nodes.
    spec = parse_spec(tiny_spec(resources={"nodes": 3}))
    node = NodePlan(nodes=3, node_rank=2, master_addr="10.1.2.3", master_port=29123)
    argv, _ = trainer_command(spec, 7, 2, CPUS, node)
    assert argv[1:3] == ["-m", "worker.launch"]
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert options["--nnodes"] == "3" and options["--node-rank"] == "2"
    assert options["--nproc-per-node"] == "1" and options["--rdzv-backend"] == "static"
    assert options["--master-addr"] == "10.1.2.3" and options["--master-port"] == "29123"
    assert options["--max-restarts"] == "0"
    assert argv[-6:] == ["-m", "worker.trainer", "--job-id", "7", "--attempt", "2"]


def _run(settings, job_id: int, attempt: int, spec) -> subprocess.CompletedProcess[str]:
    os.environ["SEQTRAIN_TORCH_THREADS"] = "1"  # trainer_command reads it
    try:
        argv, overrides = trainer_command(spec, job_id, attempt, CPUS)
    finally:
        del os.environ["SEQTRAIN_TORCH_THREADS"]
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        ARTIFACT_ROOT=str(settings.artifact_root),
        SEQTRAIN_S3_ENDPOINT_URL=settings.s3_endpoint_url or "",
        SEQTRAIN_CACHE_DIR=str(settings.cache_dir),
        SEQTRAIN_SUPERVISOR_PID=str(os.getpid()),
    )
    env.update(overrides)
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_two_rank_job_writes_once_and_a_failing_rank_fails_it(db, settings, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("runs once, on SQLite: the launch path does not depend on the backend")
    spec = parse_spec(
        tiny_spec(
            resources={"devices": 2},
            training={"epochs": 1, "log_every_steps": 2},
            checkpoint={"every_steps": 5},
        )
    )
    job = jobs.create_job(db, spec, owner_id=None)
    attempt = jobs.claim(db, job.id, "pytest", 60)
    assert attempt is not None
    done = _run(settings, job.id, attempt, spec)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    losses = jobs.list_metrics(db, job.id, split="train", name="loss", limit=1000)
    steps = [m.step for m in losses]
    # 640 training rows in global batches of 2 x 32: 10 steps, logged every 2, then the
    # epoch's loss; each once, as rank 0 alone writes.
    assert steps == [2, 4, 6, 8, 10, 10]
    saved = jobs.list_checkpoints(db, job.id)
    assert saved and {c.step for c in saved} <= {5, 10}

    # A rank that cannot load its data fails the attempt with its own exit code (4: failed).
    broken = parse_spec(
        tiny_spec(resources={"devices": 2}, data={"dataset": "missing", "val_fraction": 0.2})
    )
    job = jobs.create_job(db, broken, owner_id=None)
    attempt = jobs.claim(db, job.id, "pytest", 60)
    failed = _run(settings, job.id, attempt, broken)
    assert failed.returncode == 4, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "was not resolved at submit" in failed.stdout + failed.stderr
