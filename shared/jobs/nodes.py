"""The workers reserved for a multi-node attempt (resources.nodes > 1), one job_nodes row a
node rank.

The worker that claims the job is node 0: it writes its row with the rendezvous endpoint
(`reserve_first`). Workers that take the job's join messages each insert the lowest free
rank (`take_rank`). Every INSERT is conditional on the attempt still running the job, and
the primary key (job, attempt, node rank) lets exactly one of two workers racing for a rank
win; a unique index keeps a worker from holding two ranks of one attempt. When all `nodes`
rows exist every node starts its ranks; when the attempt ends (or its reservation times
out) node 0 deletes the rows (`release`).
"""

from __future__ import annotations

from sqlalchemy import and_, delete, exists, func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import ReturningInsert

from shared.infra.db import Database, affected_rows
from shared.infra.models import Job, JobNode, UTCDateTime, utcnow


def _insert_if_running(
    job_id: int,
    attempt: int,
    node_rank: int,
    worker: str,
    address: str | None = None,
    port: int | None = None,
) -> ReturningInsert[tuple[int]]:
    """INSERT the row only while `attempt` is the job's running attempt (one statement)."""
    running = exists().where(Job.id == job_id, Job.attempt == attempt, Job.status == "running")
    values = select(
        literal(job_id),
        literal(attempt),
        literal(node_rank),
        literal(worker),
        literal(address),
        literal(port),
        literal(utcnow(), UTCDateTime()),
    ).where(running)
    columns = ["job_id", "attempt", "node_rank", "worker", "address", "port", "joined_at"]
    # RETURNING tells whether a row went in (an INSERT ... SELECT's rowcount is not reliable).
    return insert(JobNode).from_select(columns, values).returning(JobNode.node_rank)


def reserve_first(
    db: Database, job_id: int, attempt: int, worker: str, address: str, port: int
) -> bool:
    """Record `worker` as node 0 of the attempt, hosting the rendezvous at address:port.
    Rows left by the job's earlier attempts (a node 0 that died) are deleted. False when the
    attempt no longer runs the job or node 0 is already taken."""
    try:
        with db.session() as session:
            session.execute(
                delete(JobNode).where(JobNode.job_id == job_id, JobNode.attempt != attempt)
            )
            inserted = session.execute(
                _insert_if_running(job_id, attempt, 0, worker, address, port)
            ).scalar_one_or_none()
            return inserted is not None
    except IntegrityError:
        return False


def take_rank(db: Database, job_id: int, attempt: int, nodes: int, worker: str) -> int | None:
    """Take the lowest free node rank (1 .. nodes-1) of a running attempt for `worker`; None
    when the attempt no longer runs, every rank is taken, or `worker` already holds one."""
    for node_rank in range(1, nodes):
        try:
            with db.session() as session:
                taken = session.execute(
                    _insert_if_running(job_id, attempt, node_rank, worker)
                ).scalar_one_or_none()
        except IntegrityError:
            # The rank was taken first by another worker (or this worker holds one already).
            if holds(db, job_id, attempt, worker) is not None:
                return None
            continue
        if taken is None:
            return None  # the attempt is over
        return node_rank
    return None


def holds(db: Database, job_id: int, attempt: int, worker: str) -> int | None:
    """The node rank `worker` holds in the attempt, or None."""
    with db.session() as session:
        return session.scalar(
            select(JobNode.node_rank).where(
                JobNode.job_id == job_id, JobNode.attempt == attempt, JobNode.worker == worker
            )
        )


def members(db: Database, job_id: int, attempt: int) -> list[JobNode]:
    """The attempt's reserved nodes, by node rank."""
    with db.session() as session:
        return list(
            session.scalars(
                select(JobNode)
                .where(JobNode.job_id == job_id, JobNode.attempt == attempt)
                .order_by(JobNode.node_rank)
            )
        )


def count(db: Database, job_id: int, attempt: int) -> int:
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(JobNode)
                .where(and_(JobNode.job_id == job_id, JobNode.attempt == attempt))
            )
            or 0
        )


def release(db: Database, job_id: int, attempt: int) -> int:
    """Delete every row of the attempt; returns how many there were."""
    with db.session() as session:
        return affected_rows(
            session.execute(
                delete(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt)
            )
        )


def release_node(db: Database, job_id: int, attempt: int, worker: str) -> int:
    """Delete `worker`'s row of the attempt (a node that gave up waiting)."""
    with db.session() as session:
        return affected_rows(
            session.execute(
                delete(JobNode).where(
                    JobNode.job_id == job_id, JobNode.attempt == attempt, JobNode.worker == worker
                )
            )
        )
