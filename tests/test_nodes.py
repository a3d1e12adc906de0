"""Reserving the workers of a multi-node attempt in SQL (shared.jobs.nodes), on both backends:
every INSERT is conditional on the attempt, and of two workers racing for a rank one wins."""

from __future__ import annotations

import threading

from shared import jobs
from shared.infra.db import Database
from shared.jobs import nodes
from shared.protocol import JobStatus
from shared.spec import parse_spec
from tests.helpers import tiny_spec


def claimed(db) -> tuple[int, int]:
    job = jobs.create_job(db, parse_spec(tiny_spec(resources={"nodes": 4})), owner_id=None)
    attempt = jobs.claim(db, job.id, "w0", 60)
    assert attempt == 1
    return job.id, attempt


def test_ranks_are_taken_once_and_released_together(db):
    job_id, attempt = claimed(db)
    assert nodes.reserve_first(db, job_id, attempt, "w0", "10.0.0.5", 29500)
    assert not nodes.reserve_first(db, job_id, attempt, "w9", "10.0.0.9", 29501)  # node 0 held
    assert nodes.take_rank(db, job_id, attempt, 4, "w1") == 1
    assert nodes.take_rank(db, job_id, attempt, 4, "w1") is None  # one rank a worker
    assert nodes.take_rank(db, job_id, attempt, 4, "w2") == 2
    assert nodes.take_rank(db, job_id, attempt, 4, "w3") == 3
    assert nodes.take_rank(db, job_id, attempt, 4, "w4") is None  # all taken
    taken = nodes.members(db, job_id, attempt)
    assert [(n.node_rank, n.worker) for n in taken] == [(0, "w0"), (1, "w1"), (2, "w2"), (3, "w3")]
    assert (taken[0].address, taken[0].port) == ("10.0.0.5", 29500)
    assert nodes.count(db, job_id, attempt) == 4
    assert nodes.holds(db, job_id, attempt, "w2") == 2
    assert nodes.release_node(db, job_id, attempt, "w2") == 1
    assert nodes.take_rank(db, job_id, attempt, 4, "w5") == 2  # the freed rank
    assert nodes.release(db, job_id, attempt) == 4
    assert nodes.count(db, job_id, attempt) == 0


def test_an_attempt_that_is_over_reserves_nothing(db):
    job_id, attempt = claimed(db)
    assert nodes.reserve_first(db, job_id, attempt, "w0", "127.0.0.1", 29500)
    assert jobs.requeue(db, job_id, attempt, "gave up", "w0")
    assert nodes.take_rank(db, job_id, attempt, 4, "w1") is None
    # The next attempt's node 0 clears what the last one left behind.
    second = jobs.claim(db, job_id, "w7", 60)
    assert second == 2
    assert not nodes.reserve_first(db, job_id, attempt, "w7", "127.0.0.1", 29501)  # stale
    assert nodes.reserve_first(db, job_id, second, "w7", "127.0.0.1", 29501)
    assert nodes.count(db, job_id, attempt) == 0 and nodes.count(db, job_id, second) == 1


def test_the_end_of_an_attempt_releases_its_nodes_in_the_same_write(db):
    job_id, attempt = claimed(db)
    assert nodes.reserve_first(db, job_id, attempt, "w0", "127.0.0.1", 29500)
    assert nodes.take_rank(db, job_id, attempt, 4, "w1") == 1
    assert jobs.finish(db, job_id, attempt, JobStatus.SUCCEEDED, "done", "w0")
    assert nodes.count(db, job_id, attempt) == 0  # no finished job still holds workers
    # A fenced finish (the attempt is over) leaves another attempt's rows alone.
    other, first = claimed(db)
    assert nodes.reserve_first(db, other, first, "w2", "127.0.0.1", 29501)
    assert not jobs.finish(db, other, first + 1, JobStatus.FAILED, "stale", "w9")
    assert nodes.count(db, other, first) == 1


def test_workers_racing_for_ranks_each_win_at_most_one(db, settings):
    job_id, attempt = claimed(db)
    assert nodes.reserve_first(db, job_id, attempt, "w0", "127.0.0.1", 29500)
    won: dict[str, int | None] = {}
    start = threading.Barrier(8)

    def race(name: str) -> None:
        own = Database(settings.database_url)  # a connection of its own, as a worker has
        try:
            start.wait()
            won[name] = nodes.take_rank(own, job_id, attempt, 4, name)
        finally:
            own.dispose()

    threads = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ranks = sorted(r for r in won.values() if r is not None)
    assert ranks == [1, 2, 3]  # every rank taken exactly once; five workers got none
    assert nodes.count(db, job_id, attempt) == 4
