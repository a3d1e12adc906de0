"""The trainer process, run as the supervisor's child:

    python -m worker.trainer --job-id 12 --attempt 1

It reads the job's spec from SQL, trains it with the loop (worker.loop), and reports through
the service's reporter (worker.reporting): metrics batched into fenced SQL writes,
checkpoints as safetensors files. Its exit code (shared.protocol.ExitCode) tells the
supervisor what to do: succeeded, fenced out, failed (the last `error: ...` line on stderr
is the reason), drained after a checkpoint, retry (database or store unavailable), or
crashed (the traceback's last lines become the job's error). A SIGTERM (cancel, timeout)
stops it at once; SIGUSR1 (the worker is draining) saves a checkpoint and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.exc import OperationalError
from torch.distributed.elastic.multiprocessing.errors import record

from shared import jobs
from shared.data import examples as datalib
from shared.hub import registry as hub
from shared.hub.cache import checkout
from shared.infra.cache import ChecksumMismatch, LocalCache, cache_for, readable_file
from shared.infra.db import Database
from shared.infra.models import Checkpoint
from shared.infra.storage import ArtifactMissing, ArtifactStore, StoreError, open_store
from shared.protocol import RANK_DIR_ENV, ExitCode, TrainerFailure
from shared.settings import Settings
from shared.spec import JobSpec
from shared.zoo.checkpoints import load_checkpoint
from worker.distributed import end_group, init_distributed, rank_and_world
from worker.evaluation import write_report
from worker.launch import die_with_parent
from worker.loop import Drained, TrainingError, TrainResult, train
from worker.pausing import Paused
from worker.reporting import Reporter, ServiceReporter

__all__ = ["Reporter", "TrainResult", "TrainingError", "main", "run", "train"]


def run_attempt(job_id: int, attempt: int, settings: Settings) -> int:
    started = time.perf_counter()
    db = Database(settings.database_url)
    store = open_store(settings)
    job = jobs.get_job(db, job_id)
    spec = JobSpec.model_validate(job.spec)
    cache = cache_for(settings)
    links = jobs.dataset_links(db, job_id)
    note = _say if os.environ.get("LOCAL_RANK", "0") == "0" else None  # one line a machine
    splits = datalib.load_splits(spec, store, links, cache, note)
    backbone = base_model_dir(db, store, cache, settings, job_id, spec)
    resume = None
    latest = jobs.latest_checkpoint(db, job_id)
    if latest is not None and store.exists(latest.uri):
        resume = read_checkpoint(store, cache, latest)
        if rank_and_world()[0] == 0:
            jobs.note_attempt(
                db,
                job_id,
                attempt,
                f"resuming from checkpoint at step {latest.step} (epoch {latest.epoch})",
            )
    reporter = ServiceReporter(db, store, job_id, attempt, spec, settings.redis_url)
    report = Reporter(
        reporter.log_metrics,
        reporter.save,
        reporter.flush,
        stop_requested=_STOP.is_set,
        pause_at_step=job.pause_at_step,
        pause_at_epoch=job.pause_at_epoch,
        planned=reporter.planned,
        log_samples=reporter.log_samples,
    )
    print(f"read the job, its data and base model in {time.perf_counter() - started:.2f} s")
    try:
        result = train(spec, report, resume, splits, backbone=backbone)
        reporter.flush()
        write_report(db, store, cache, job_id, attempt, result, splits)
    except jobs.Fenced as exc:
        print(f"stopping: {exc}", file=sys.stderr, flush=True)
        return ExitCode.FENCED
    except Drained as exc:
        print(f"drained: {exc}", flush=True)
        return ExitCode.DRAINED
    except Paused as exc:
        reporter.flush()
        print(f"paused: {exc}", flush=True)
        return ExitCode.PAUSED
    finally:
        reporter.close()
    print(f"done: step {result.step}, {json.dumps(result.metrics)}", flush=True)
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def read_checkpoint(store: ArtifactStore, cache: LocalCache, ckpt: Checkpoint) -> dict[str, Any]:
    """A checkpoint row's file, loaded: in place from a directory store, else from this
    machine's cache (downloaded once, its sha256 checked against the row)."""
    try:
        return load_checkpoint(readable_file(store, cache, ckpt.uri, ckpt.sha256))
    except ChecksumMismatch as exc:
        raise TrainerFailure(
            f"cannot resume from the checkpoint at step {ckpt.step}: {exc}"
        ) from None


def base_model_dir(
    db: Database,
    store: ArtifactStore,
    cache: LocalCache,
    settings: Settings,
    job_id: int,
    spec: JobSpec,
) -> Path | None:
    """A pretrained job's base model, unpacked once per hash into this machine's cache."""
    if spec.model.pretrained is None:
        return None
    base = hub.job_base_model(db, job_id)
    if base is None:
        raise TrainerFailure(
            f"the base model {spec.model.pretrained} was deleted from the model registry"
        )
    return checkout(store, base.uri, base.sha256, cache, settings.max_model_bytes)


# Set by SIGUSR1: the worker is draining; checkpoint at the next step and exit.
_STOP = threading.Event()


def _on_stop_signal(signum: int, frame: Any) -> None:
    _STOP.set()


# Under worker.launch each rank leaves its pid and exit code in RANK_DIR_ENV's folder (the
# launcher forwards SIGUSR1 to rank 0 and exits with the code of the rank that failed first).


def _rank_file(suffix: str) -> str | None:
    folder = os.environ.get(RANK_DIR_ENV)
    return os.path.join(folder, f"rank-{os.environ.get('RANK', '0')}.{suffix}") if folder else None


def _write_rank_file(suffix: str, value: int) -> None:
    path = _rank_file(suffix)
    if path is not None:
        with open(path, "w") as handle:
            handle.write(str(value))


@record  # under torchrun: a failing rank's traceback reaches the launcher's log
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.trainer")
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    args = parser.parse_args(argv)
    # A DDP rank's parent is torchrun's agent (worker.launch), which dies with the supervisor.
    die_with_parent(check_parent="TORCHELASTIC_RUN_ID" not in os.environ)
    signal.signal(signal.SIGUSR1, _on_stop_signal)
    _write_rank_file("pid", os.getpid())
    settings = Settings.from_env()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        init_distributed()
        return run_attempt(args.job_id, args.attempt, settings)
    except TrainerFailure as exc:
        # Expected failures: the message alone is the reason, no traceback.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.FAILED
    except (torch.OutOfMemoryError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"error: out of memory ({first}); lower training.batch_size or data.max_length, "
            "or use a smaller model",
            file=sys.stderr,
            flush=True,
        )
        return ExitCode.FAILED
    except OperationalError as exc:
        print(f"error: database unreachable: {exc.orig}", file=sys.stderr, flush=True)
        return ExitCode.RETRY
    except ArtifactMissing:
        raise  # a deleted or misnamed object, not an outage: the traceback says which
    except StoreError as exc:
        print(f"error: artifact store unavailable: {exc}", file=sys.stderr, flush=True)
        return ExitCode.RETRY


def run(argv: list[str] | None = None) -> int:
    """main() and what must follow it on every path (a fresh interpreter, torchrun's ranks
    and the fork-server's children): the rank's exit file and the process group's teardown."""
    code = main(argv) or 0
    _write_rank_file("exit", code)
    end_group(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
