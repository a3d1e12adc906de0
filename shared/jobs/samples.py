"""Sample translations a seq2seq attempt stores after each validation (and its test
evaluation): a few (source, reference, hypothesis) triples, each with the sacrebleu
signature its epoch's BLEU was computed with, written fenced by the attempt
like its metrics, so a zombie attempt never adds any. The job page and
GET /api/v1/jobs/<id>/samples read them, newest epoch first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy import select

from shared.infra.db import Database
from shared.infra.models import JobSample
from shared.jobs.transitions import fenced

SampleSplit = Literal["validation", "test"]
SAMPLE_KEYS = ("source", "reference", "hypothesis")
OPTIONAL_KEYS = ("signature",)


def write_samples(
    db: Database,
    job_id: int,
    attempt: int,
    *,
    epoch: int,
    step: int,
    split: SampleSplit,
    items: Sequence[dict[str, str]],
) -> None:
    """Store one evaluation's samples while `attempt` still runs the job (Fenced otherwise)."""
    if split not in ("validation", "test"):
        raise ValueError(f"split {split!r}: samples are of validation or test")
    rows = [
        {key: str(item[key]) for key in (*SAMPLE_KEYS, *OPTIONAL_KEYS) if key in item}
        for item in items
    ]
    with fenced(db, job_id, attempt) as session:
        session.add(
            JobSample(
                job_id=job_id, attempt=attempt, epoch=epoch, step=step, split=split, items=rows
            )
        )


# Evaluations a listing returns at most: a page shows the newest; a long run keeps the rest.
SAMPLES_LISTED = 100


def list_samples(db: Database, job_id: int, limit: int = SAMPLES_LISTED) -> list[JobSample]:
    """A job's samples, newest epoch (then step, then write) first; at most `limit`."""
    with db.session() as session:
        return list(
            session.scalars(
                select(JobSample)
                .where(JobSample.job_id == job_id)
                .order_by(JobSample.epoch.desc(), JobSample.step.desc(), JobSample.id.desc())
                .limit(limit)
            )
        )
