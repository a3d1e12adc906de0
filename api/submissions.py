"""How a job is created over HTTP, for POST /jobs and a retry alike: the Idempotency-Key,
dataset versions pinned, the caller's limits, the placement check, and a group commit.

The caller's limits (shared.limits) refuse a job before it is stored: a priority above
max_priority, more devices than max_devices, or a job that cannot be preempted from a
non-admin is a 422 naming the field; past max_queued it is a 429 (`quota_exceeded`, with
Retry-After), counted in the insert's own transaction so that concurrent submissions, in
any API process, never leave more than max_queued jobs waiting.

Concurrent submissions in one API process share a flush (`api.batching`): one SQL
transaction inserts all their jobs, dataset links and first events, and one Redis round
trip enqueues them, after the commit. A request that arrives while the service is idle is
flushed at once, alone. Each request still gets its own answer: its job, or its own error
(a reused Idempotency-Key), or the batch's error (the database is down: 503).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flask import request

from api import services
from api.auth import current_principal
from api.basemodels import pin_base_model
from api.batching import GroupCommit
from api.errors import ApiError
from shared import jobs
from shared.data import datasets as registry
from shared.infra.db import Database
from shared.infra.models import Dataset, Job
from shared.infra.queue import JobQueue
from shared.jobs import DatasetGone, IdempotentReplay, NewJob
from shared.jobs.errors import QuotaExceeded
from shared.jobs.preemption import preempt
from shared.jobs.routing import PlacementError, check_placement
from shared.limits import Limits, over_limits, user_limits
from shared.settings import Settings
from shared.spec import JobSpec, dataset_references

log = logging.getLogger("seqtrain.api")


class Submissions:
    def __init__(
        self, db: Database, queue: JobQueue, max_batch: int, settings: Settings | None = None
    ) -> None:
        self.db, self.queue, self.settings = db, queue, settings
        self.group: GroupCommit[NewJob, tuple[int, bool]] = GroupCommit(self._flush, max_batch)

    def submit(self, new: NewJob) -> tuple[int, bool]:
        """Store and enqueue one job: (its id, whether it reached Redis). Raises
        `IdempotentReplay` when the owner already used the key, `DatasetGone` when a
        dataset it pins was deleted, `QuotaExceeded` past the owner's max_queued."""
        return self.group.submit(new)

    def _flush(self, batch: list[NewJob]) -> Sequence[tuple[int, bool] | Exception]:
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
        self._make_room(
            [new for new, job_id in zip(batch, results, strict=True) if isinstance(job_id, int)]
        )
        return [(job_id, enqueued) if isinstance(job_id, int) else job_id for job_id in results]

    def _make_room(self, created: Sequence[NewJob]) -> None:
        """Preempt for a new job that outranks running ones now, not at the next reconciler
        pass (shared.jobs.preemption); a job below the margin cannot outrank anyone."""
        settings = self.settings
        if settings is None or not settings.preemption:
            return
        queues = {
            new.spec.resources.queue
            for new in created
            if new.spec.resources.priority >= settings.preempt_margin
        }
        if not queues:
            return
        try:
            preempt(self.db, settings, queues)
        except Exception as exc:  # the reconciler's next pass does it
            log.warning("preemption check failed (%s)", type(exc).__name__)


IDEMPOTENCY_KEY_MAX = 200
# Seconds a client past its max_queued waits before it tries again: a queued job starts or
# is cancelled at no time anyone can predict, and a try costs one request.
QUOTA_RETRY_SECONDS = 30


@dataclass(frozen=True)
class Submitted:
    """The answer to one submission: the new job, or the one its Idempotency-Key made first."""

    job_id: int
    status: str
    enqueued: bool
    replayed: bool = False


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header: 1-200 printable ASCII characters, or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX or not all(33 <= ord(c) < 127 for c in key):
        raise ApiError(
            400,
            "bad_header",
            "Idempotency-Key must be 1-200 printable ASCII characters without spaces",
            fields=[{"path": "Idempotency-Key", "message": "invalid", "type": "header"}],
        )
    return key


def submit(
    spec: JobSpec,
    key: str | None,
    datasets: Mapping[str, int] | None = None,
    note: str | None = None,
) -> Submitted:
    """Create one job for the caller. A key the caller already used answers with the job it
    made (a 422 if that job's spec differs); `datasets` (role -> dataset id) pins versions
    already chosen, else the spec's references are resolved for the caller; a job past the
    caller's limits (a 422, or past max_queued a 429) or one no registered worker could
    hold is refused with the numbers; `note` is the message of the new job's first event
    (default "submitted"), written in the same transaction."""
    svc, principal = services(), current_principal()
    spec, base = pin_base_model(spec)
    if key is not None:  # a retried request: looked up here, in parallel, not in the flush
        earlier = jobs.keyed_job(svc.db, principal.user_id, key)
        if earlier is not None:
            return replayed(earlier, spec)
    limits = check_limits(spec)
    links = resolve_datasets(spec) if datasets is None else dict(datasets)
    facts = None if base is None else {"parameters": base.parameters, **base.summary}
    try:  # a job no registered worker could ever hold is refused, with the numbers
        estimate = check_placement(svc.db, spec, svc.settings, facts)
    except PlacementError as exc:
        fields = [{"path": exc.field, "message": exc.message, "type": "placement"}]
        raise ApiError(422, "validation_error", f"invalid job spec: {exc.field}", fields) from None
    new = NewJob(
        spec,
        principal.user_id,
        principal.name,
        links,
        key,
        estimate,
        message=note or "submitted",
        base_model_id=base.id if base is not None else None,
        aging=svc.settings.priority_aging,
        max_queued=limits.max_queued,
    )
    try:
        job_id, enqueued = svc.submissions.submit(new)
    except IdempotentReplay as replay:
        return replayed(replay.job, spec)
    except DatasetGone as gone:  # deleted between resolving and storing the job
        raise deleted_datasets(
            {
                role: f"{'model' if role == 'model' else 'dataset'}:{ref} was deleted"
                for role, ref in gone.datasets.items()
            }
        ) from None
    except QuotaExceeded as exceeded:
        raise over_quota(exceeded) from None
    return Submitted(job_id, "queued", enqueued)


def check_limits(spec: JobSpec) -> Limits:
    """The caller's limits; a 422 naming each `resources` field of the spec that passes
    them (priority, devices, preemptible), as a job submit and a sweep check them."""
    principal = current_principal()
    limits = user_limits(services().db, principal.user_id)
    refusals = over_limits(spec.resources, limits, principal.is_admin)
    if refusals:
        fields = [{"path": path, "message": why, "type": "limit"} for path, why in refusals]
        paths = ", ".join(path for path, _ in refusals)
        raise ApiError(422, "validation_error", f"invalid job spec: {paths}", fields)
    return limits


def over_quota(exceeded: QuotaExceeded) -> ApiError:
    """The 429 of a submission past the caller's max_queued, with the numbers."""
    queued, limit = exceeded.queued, exceeded.limit
    message = (
        "your account may not submit jobs (max_queued is 0)"
        if limit == 0
        else f"you have {queued} jobs queued and your limit is {limit}; "
        "submit again once one of them has started or been cancelled"
    )
    field = {"path": "max_queued", "message": f"{queued} queued of {limit}", "type": "quota"}
    return ApiError(
        429,
        "quota_exceeded",
        message,
        [field],
        headers={"Retry-After": str(QUOTA_RETRY_SECONDS)},
    )


ROLE_FIELDS = {
    "train": "data.dataset",
    "validation": "data.validation_dataset",
    "test": "data.test_dataset",
    "model": "model.pretrained",
}


def deleted_datasets(messages: Mapping[str, str]) -> ApiError:
    """A 422 naming each spec field (by role) whose dataset no longer exists."""
    fields = [
        {"path": ROLE_FIELDS[role], "message": message, "type": "dataset"}
        for role, message in sorted(messages.items())
    ]
    paths = ", ".join(f["path"] for f in fields)
    return ApiError(422, "validation_error", f"invalid job spec: {paths}", fields)


def pinned_datasets(job_id: int, spec: JobSpec) -> dict[str, int]:
    """The dataset versions a finished job trained on, for its retry: role -> dataset id.
    A 422 names each one deleted since (the retry could only fail)."""
    links = {role: ds.id for role, ds in jobs.dataset_links(services().db, job_id).items()}
    missing = {
        role: f"{reference} (as job {job_id} used it) was deleted"
        for role, reference in dataset_references(spec).items()
        if reference is not None and not reference.startswith("builtin:") and role not in links
    }
    if missing:
        raise deleted_datasets(missing)
    return links


def replayed(job: Job, spec: JobSpec) -> Submitted:
    """The job a key created first, if its spec is the same."""
    if job.spec != spec.model_dump(mode="json"):
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key was already used for job {job.id} with a different spec",
            fields=[
                {
                    "path": "Idempotency-Key",
                    "message": "reused with a different spec",
                    "type": "header",
                }
            ],
        )
    return Submitted(job.id, job.status, enqueued=True, replayed=True)


def resolve_datasets(spec: JobSpec) -> dict[str, int]:
    """Pin each dataset the spec names to a version the caller may use: role -> dataset id."""
    principal, links, errors = current_principal(), {}, []
    for role, reference in dataset_references(spec).items():
        field = ROLE_FIELDS[role]
        if reference is None:
            continue
        try:
            resolved = registry.resolve(
                services().db, reference, principal.user_id, principal.is_admin, field
            )
            registry.check_task(resolved, spec.task, field, training=role == "train")
        except registry.DatasetError as exc:
            errors.append({"path": exc.field or field, "message": exc.message, "type": "dataset"})
            continue
        if isinstance(resolved, Dataset):
            links[role] = resolved.id
    if errors:
        paths = ", ".join(e["path"] for e in errors)
        raise ApiError(422, "validation_error", f"invalid job spec: {paths}", errors)
    return links
