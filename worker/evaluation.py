"""The evaluation report of a finished training run: its best checkpoint's weights, run over
the validation split (and the test split when the spec names test data) through the task's
plug-in (`Task.report`, numbers from shared.zoo.report), stored as JSON with
`jobs.save_report`, fenced like the attempt's other writes.

Rank 0 alone computes it, after training and before the trainer exits, so a job shows
succeeded only once its report exists. A report that cannot be computed never fails the
job: the trainer prints `report: failed: ...` and notes it among the job's events.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from shared import jobs
from shared.data import examples as datalib
from shared.infra.cache import LocalCache, readable_file
from shared.infra.db import Database
from shared.infra.models import Checkpoint
from shared.infra.storage import ArtifactStore
from shared.zoo.checkpoints import load_checkpoint, load_model_state
from shared.zoo.task import ReportSplit
from worker.loop import Run, TrainResult


def write_report(
    db: Database,
    store: ArtifactStore,
    cache: LocalCache,
    job_id: int,
    attempt: int,
    result: TrainResult,
    splits: datalib.Splits,
) -> None:
    """Compute and store the job's report; a failure is printed and noted, never raised
    (except `jobs.Fenced`: the attempt no longer runs the job)."""
    run = result.run
    if run is None or run.rank != 0:
        return
    started = time.perf_counter()
    try:
        ckpt = jobs.best_checkpoint(db, job_id)
        if ckpt is None:
            raise ValueError("the job has no checkpoint")
        state = load_checkpoint(readable_file(store, cache, ckpt.uri, ckpt.sha256))
        body = build_report(run, ckpt, state, splits)
        if body is None:
            return
        jobs.save_report(db, job_id, attempt, ckpt.id, body)
    except jobs.Fenced:
        raise
    except Exception as exc:
        reason = f"report: failed: {type(exc).__name__}: {exc}"
        print(reason, flush=True)  # stdout: the job still succeeds
        try:
            jobs.note_attempt(db, job_id, attempt, reason[:500])
        except Exception as note_error:  # the database is down: the log line says it
            print(f"report: could not note the failure: {note_error}", file=sys.stderr, flush=True)
        return
    print(
        f"report: checkpoint at step {ckpt.step} over {', '.join(body['splits'])} "
        f"in {time.perf_counter() - started:.2f} s",
        flush=True,
    )


def build_report(
    run: Run, ckpt: Checkpoint, state: dict[str, Any], splits: datalib.Splits
) -> dict[str, Any] | None:
    """The report's body (shared.jobs.reports) with `state`'s weights loaded into the run's
    model; None when the task has no report."""
    spec, task, data = run.spec, run.task, run.data
    load_model_state(run.model, state["model"])
    run.model.eval()
    rows: dict[str, list[Any]] = {"validation": [], "test": []}
    if task.report_rows:
        rows["validation"] = datalib.split_rows(splits, spec.data, spec.training.seed)[1]
        rows["test"] = splits.test.rows if splits.test is not None else []
    named = {"validation": data.val, "test": data.test}
    sections: dict[str, Any] = {}
    summary: dict[str, float] = {}
    with torch.no_grad():
        for name, examples in named.items():
            if examples is None:
                continue
            split = ReportSplit(
                name,
                examples,
                rows[name],
                run.device,
                batch_size=spec.training.batch_size,
                samples=name == "validation",
                seed=spec.training.seed,
                decoding=spec.decoding,
            )
            section = task.report(run.model, data.tokenizer, data.labels, split)
            if section is None:
                return None
            sections[name] = section
            summary.update(task.report_summary(name, section))
    return {
        "task": task.name,
        "checkpoint": {"id": ckpt.id, "step": ckpt.step, "epoch": ckpt.epoch},
        "summary": summary,
        "splits": sections,
    }
