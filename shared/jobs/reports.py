"""A finished job's evaluation report: the task's own JSON (shared.zoo.report's builders),
computed by the attempt that trains the job to its end on its best checkpoint, and written
fenced like the attempt's other writes, so a zombie attempt never replaces it.

Every report has the keys below; the task's own sections sit beside them:

    {"task": "classification", "checkpoint": {"id": 7, "step": 300, "epoch": 3},
     "splits": {"validation": {...the task's sections...}, "test": {...} (when the spec
     names test data)}, "summary": {"validation/accuracy": 0.91, ...}}
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from shared.infra.db import Database
from shared.infra.models import Report
from shared.jobs.transitions import fenced


def save_report(
    db: Database, job_id: int, attempt: int, checkpoint_id: int | None, body: dict[str, Any]
) -> None:
    """Write (or replace) the job's report while `attempt` still runs the job."""
    with fenced(db, job_id, attempt) as session:
        session.execute(delete(Report).where(Report.job_id == job_id))
        session.add(Report(job_id=job_id, attempt=attempt, checkpoint_id=checkpoint_id, body=body))


def get_report(db: Database, job_id: int) -> Report | None:
    with db.session() as session:
        report = session.get(Report, job_id)
        if report is not None:
            session.expunge(report)
        return report
