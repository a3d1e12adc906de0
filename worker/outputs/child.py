"""The output's child process, run by worker.outputs.supervisor:

    python -m worker.outputs --output-id 12 --attempt 1

It loads the output's checkpoint, runs its kind's runner (worker.outputs.RUNNERS), uploads
the file it made and finishes the row, all fenced on the attempt. The exit code is the
trainer's protocol (shared.protocol.ExitCode): 0 when the row is finished (succeeded, or
cancelled on request), 3 fenced out, 4 failed (the last `error: ...` line on stderr is the
reason), 75 retry (the database or the store is unavailable), anything else a crash. The
object is published (complete and checked) before the row names it, and deleted again
when the row cannot be written: no row ever points to a partial or missing file.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from shared import jobs
from shared.infra.cache import ChecksumMismatch, cache_for, readable_file
from shared.infra.db import Database
from shared.infra.models import JobOutput
from shared.infra.storage import ArtifactMissing, ArtifactStore, StoreError, open_store
from shared.jobs.outputs import CANCELLED_BY_USER
from shared.protocol import ExitCode, JobStatus, TrainerFailure
from shared.settings import Settings
from shared.spec import JobSpec
from worker.launch import die_with_parent
from worker.outputs import RUNNERS, Cancelled, OutputContext, OutputFile

# At most one progress write this often (the last batch's is always written).
PROGRESS_SECONDS = 0.25


def output_key(output: JobOutput, attempt: int, filename: str) -> str:
    """Where an attempt's file lives; the attempt in the key means a fenced attempt never
    overwrites, or deletes, the file of the attempt that owns the output."""
    return f"jobs/{output.job_id}/outputs/{output.id}/a{attempt}/{filename}"


def progress_writer(
    db: Database, output_id: int, attempt: int
) -> Callable[[int, int | None], None]:
    """`progress(rows_done, rows_total)`: fenced, throttled, raises Cancelled on request."""
    last = 0.0

    def progress(rows_done: int, rows_total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_SECONDS and rows_done != rows_total:
            return
        last = now
        if jobs.output_progress(db, output_id, attempt, rows_done, rows_total):
            raise Cancelled(CANCELLED_BY_USER)

    return progress


def build_context(
    db: Database, store: ArtifactStore, settings: Settings, output: JobOutput, scratch: Path
) -> OutputContext:
    """The output's job, its checkpoint (loaded, and as a predictor) and report."""
    from shared.zoo.checkpoints import load_checkpoint
    from shared.zoo.predictor import load_predictor
    from worker.trainer import base_model_dir

    job = jobs.get_job(db, output.job_id)
    spec = JobSpec.model_validate(job.spec)
    ckpt = (
        jobs.get_checkpoint(db, job.id, output.checkpoint_id)
        if output.checkpoint_id is not None
        else jobs.best_checkpoint(db, job.id)
    )
    if ckpt is None:
        raise TrainerFailure(f"job {job.id}'s checkpoint {output.checkpoint_id} was deleted")
    cache = cache_for(settings)
    try:
        path = readable_file(store, cache, ckpt.uri, ckpt.sha256)
    except (ArtifactMissing, ChecksumMismatch) as exc:
        raise TrainerFailure(f"job {job.id}'s checkpoint cannot be read: {exc}") from None
    backbone = base_model_dir(db, store, cache, settings, job.id, spec)
    predictor = load_predictor(str(path), ckpt.sha256, str(backbone) if backbone else None)
    report = jobs.get_report(db, job.id)
    return OutputContext(
        output=output,
        job=job,
        spec=spec,
        predictor=predictor,
        checkpoint=load_checkpoint(path),
        report=report.body if report is not None else None,
        scratch=scratch,
        progress=progress_writer(db, output.id, output.attempt),
        db=db,
        store=store,
        settings=settings,
    )


def publish(
    db: Database, store: ArtifactStore, output: JobOutput, attempt: int, result: OutputFile
) -> str:
    """Upload the runner's file and finish the row with it; the key."""
    key = output_key(output, attempt, result.filename)
    staging = store.staging_path(key)
    try:
        shutil.move(result.path, staging)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    size, digest = store.commit(staging, key)
    try:
        done = jobs.finish_output(
            db,
            output.id,
            attempt,
            JobStatus.SUCCEEDED,
            uri=key,
            sha256=digest,
            bytes=size,
            filename=result.filename,
            content_type=result.content_type,
            summary=result.summary,
        )
    except BaseException:
        store.delete(key)
        raise
    if not done:
        store.delete(key)
        raise jobs.Fenced(f"output {output.id} attempt {attempt} no longer owns the output")
    return key


def run_output(output_id: int, attempt: int, settings: Settings) -> int:
    db = Database(settings.database_url)
    store = open_store(settings)
    output = jobs.get_output(db, output_id)
    if output.status != JobStatus.RUNNING or output.attempt != attempt:
        print(f"stopping: output {output_id} attempt {attempt} is not running", file=sys.stderr)
        return ExitCode.FENCED
    runner = RUNNERS.get(output.kind)
    if runner is None:
        raise TrainerFailure(f"unknown output kind {output.kind!r}; valid: {', '.join(RUNNERS)}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"seqtrain-output-{output_id}-") as folder:
        try:
            context = build_context(db, store, settings, output, Path(folder))
            print(f"loaded the checkpoint in {time.perf_counter() - started:.2f} s", flush=True)
            result = runner(context)
            key = publish(db, store, output, attempt, result)
        except Cancelled:
            jobs.finish_output(db, output_id, attempt, JobStatus.CANCELLED, error=CANCELLED_BY_USER)
            print("cancelled", flush=True)
            return 0
        except jobs.Fenced as exc:
            print(f"stopping: {exc}", file=sys.stderr, flush=True)
            return ExitCode.FENCED
    print(f"done: {key} in {time.perf_counter() - started:.2f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.outputs")
    parser.add_argument("--output-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent()
    settings = Settings.from_env()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    try:
        return run_output(args.output_id, args.attempt, settings)
    except (TrainerFailure, MemoryError) as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr, flush=True)
        return ExitCode.FAILED
    except OperationalError as exc:
        print(f"error: database unreachable: {exc.orig}", file=sys.stderr, flush=True)
        return ExitCode.RETRY
    except ArtifactMissing:
        raise  # a deleted or misnamed object, not an outage: the traceback says which
    except StoreError as exc:
        print(f"error: artifact store unavailable: {exc}", file=sys.stderr, flush=True)
        return ExitCode.RETRY


def _first_line(exc: Any) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
