"""Job submissions, committed and enqueued in groups.

Concurrent POST /jobs requests in one API process share a flush (`api.batching`): one
SQL transaction inserts all their jobs, dataset links and first events, and one Redis
round trip enqueues them, after the commit. A request that arrives while the service is
idle is flushed at once, alone. Each request still gets its own answer: its job, or its
own error (a reused Idempotency-Key), or the batch's error (the database is down: 503).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from api.batching import GroupCommit
from shared import jobs
from shared.infra.db import Database
from shared.infra.queue import JobQueue
from shared.jobs import IdempotentReplay, NewJob

log = logging.getLogger("seqtrain.api")


class Submissions:
    def __init__(self, db: Database, queue: JobQueue, max_batch: int) -> None:
        self.db, self.queue = db, queue
        self.group: GroupCommit[NewJob, tuple[int, bool]] = GroupCommit(self._flush, max_batch)

    def submit(self, new: NewJob) -> tuple[int, bool]:
        """Store and enqueue one job: (its id, whether it reached Redis). Raises
        `IdempotentReplay` when the owner already used the key."""
        return self.group.submit(new)

    def _flush(self, batch: list[NewJob]) -> Sequence[tuple[int, bool] | IdempotentReplay]:
        results = jobs.submit_jobs(self.db, batch)
        created = [
            (job_id, new.spec.resources.queue)
            for job_id, new in zip(results, batch, strict=True)
            if isinstance(job_id, int)
        ]
        enqueued = True
        try:  # after commit: a worker never receives an id that is not in SQL yet
            self.queue.enqueue_jobs(created)
        except Exception as exc:
            enqueued = False
            reason = type(exc).__name__
            log.warning(
                "jobs %s: enqueue failed (%s); they stay queued in SQL",
                ", ".join(str(job_id) for job_id, _ in created),
                reason,
            )
            try:
                for job_id, _ in created:
                    jobs.note_event(self.db, job_id, "api", f"enqueue failed: {reason}")
            except Exception as note_error:  # the jobs are committed; the reconciler has them
                log.warning("enqueue failure not noted (%s)", type(note_error).__name__)
        return [(job_id, enqueued) if isinstance(job_id, int) else job_id for job_id in results]
