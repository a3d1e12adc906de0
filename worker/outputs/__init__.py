"""Job outputs: work a worker does on a trained job's checkpoint (batch predictions, export
bundles), through the queue, in a child process like training:

    python -m worker.outputs --output-id 12 --attempt 1

__init__.py    the contract a kind codes against: OutputContext in, OutputFile out; RUNNERS
child.py       the child: builds the context, runs the kind's runner, uploads its file and
               finishes the row (exit codes as the trainer's, an `error: ...` line on failure)
supervisor.py  the Celery side (seqtrain.run_output): claim, run the child, renew the lease,
               stop it on cancel, record how it ended
predictions.py kind "predictions": the predictor over a dataset's rows, to JSONL or CSV
export.py      kind "export": a downloadable bundle (the weights, tokenizer, ONNX, a card)

Importing this package does not import torch: the Celery process imports the supervisor.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.infra.db import Database
    from shared.infra.models import Job, JobOutput
    from shared.infra.storage import ArtifactStore
    from shared.settings import Settings
    from shared.spec import JobSpec
    from shared.zoo.predictor import Predictor


class Cancelled(Exception):
    """A cancel was asked while the output ran; `progress` raises it."""


@dataclass
class OutputContext:
    """What a runner gets: the output's row, its job, and the checkpoint loaded."""

    output: JobOutput  # kind, params, dataset_id, job_id, id, attempt
    job: Job
    spec: JobSpec
    predictor: Predictor  # from the output's checkpoint
    checkpoint: dict[str, Any]  # the checkpoint file, loaded (shared.zoo.checkpoints)
    report: dict[str, Any] | None  # the job's evaluation report's body, if it has one
    scratch: Path  # an empty temporary directory for the result file
    # Rows done, rows in all (None: unknown); raises Cancelled when a cancel was asked.
    progress: Callable[[int, int | None], None]
    db: Database
    store: ArtifactStore
    settings: Settings


@dataclass
class OutputFile:
    """What a runner made: a file in `scratch`, its download name and type, and what it
    found worth saying (rows per second, ONNX parity...), stored as the output's summary."""

    path: Path
    filename: str
    content_type: str
    summary: dict[str, Any]


Runner = Callable[[OutputContext], OutputFile]

# Each kind's module (with `run(context) -> OutputFile`), imported when an output of that
# kind runs.
RUNNER_MODULES: dict[str, str] = {
    "predictions": "worker.outputs.predictions",
    "export": "worker.outputs.export",
}


def _lazy(module: str) -> Runner:
    def run(context: OutputContext) -> OutputFile:
        runner: Runner = importlib.import_module(module).run
        return runner(context)

    run.__qualname__ = f"{module}.run"
    return run


RUNNERS: dict[str, Runner] = {kind: _lazy(module) for kind, module in RUNNER_MODULES.items()}

__all__ = ["RUNNERS", "RUNNER_MODULES", "Cancelled", "OutputContext", "OutputFile", "Runner"]
