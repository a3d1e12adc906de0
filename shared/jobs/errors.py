"""What the job state machine raises."""

from __future__ import annotations

from shared.infra.models import Job


class JobNotFound(LookupError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class InvalidTransition(Exception):
    """The job is not in a state that allows the requested change."""


class IdempotentReplay(Exception):
    """The owner already submitted a job with this Idempotency-Key."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"idempotency key already used by job {job.id}")
        self.job = job


class DatasetGone(Exception):
    """A dataset (or, as role "model", the base model) the submission pins was deleted
    before the job was stored."""

    def __init__(self, datasets: dict[str, int]) -> None:
        names = ", ".join(
            f"{'model' if role == 'model' else 'dataset'}:{ref}" for role, ref in datasets.items()
        )
        super().__init__(f"{names} was deleted")
        self.datasets = datasets  # role -> the deleted dataset's id


class QuotaExceeded(Exception):
    """The owner already has `queued` jobs waiting, as many as their `max_queued` allows:
    this submission was not stored."""

    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(f"{queued} jobs queued; the limit is {limit}")
        self.queued, self.limit = queued, limit


class Fenced(Exception):
    """This attempt no longer owns the job: its writes are refused."""
