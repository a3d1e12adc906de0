"""Which job a free worker takes, on a real database: priority, aging, fair share, backfill,
soft quotas (also under concurrent claims), multi-node reservations one round at a time,
and the usage charged when an attempt ends."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from shared import jobs
from shared.infra.models import Job, User, utcnow
from shared.jobs import nodes, scheduler
from shared.jobs.ranking import DEFAULT_AGING, Policy
from shared.protocol import JobStatus
from shared.spec import parse_spec
from tests.helpers import register_worker, tiny_spec

FIFO = Policy(fair_share=False)


@pytest.fixture
def queue() -> str:
    return f"sched-{uuid.uuid4().hex[:8]}"


def submit(db, queue: str, owner: int | None, **resources) -> int:
    spec = parse_spec(tiny_spec(resources={"queue": queue, **resources}))
    return jobs.create_job(db, spec, owner_id=owner).id


def take(db, queue: str, worker: str = "w1", devices: int = 1, policy: Policy | None = None):
    return scheduler.next_work(db, worker, queue, devices, 60, policy or Policy())


def register(db, name: str, queue: str, devices: int = 1) -> None:
    register_worker(db, name, queue, devices)


def set_job(db, job_id: int, **values) -> None:
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def set_user(db, user_id: int, **values) -> None:
    with db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(**values))


def test_the_higher_priority_goes_first_then_the_oldest(db, queue, accounts):
    alice = accounts["alice"].user_id
    low = submit(db, queue, alice, priority="low")
    first_normal = submit(db, queue, alice)
    high = submit(db, queue, alice, priority=90)
    second_normal = submit(db, queue, alice)
    order = [take(db, queue).job_id for _ in range(4)]
    assert order == [high, first_normal, second_normal, low]
    assert take(db, queue) is None


def test_waiting_raises_a_job_one_level_per_aging_period(db, queue, accounts):
    alice = accounts["alice"].user_id
    old_low = submit(db, queue, alice, priority=40)
    new_normal = submit(db, queue, alice, priority=50)
    # Submitted 11 aging periods ago: level 51 now, above the new job's 50.
    key = (utcnow() - timedelta(seconds=11 * DEFAULT_AGING)).timestamp() - 40 * DEFAULT_AGING
    set_job(db, old_low, rank_key=key)
    assert take(db, queue).job_id == old_low
    assert take(db, queue).job_id == new_normal


def test_fair_share_holds_for_a_backlog_older_than_an_aging_period(db, queue, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    set_user(db, alice, usage=5000.0, usage_at=utcnow())
    backlog = [submit(db, queue, alice) for _ in range(3)]
    for job_id in backlog:  # submitted 2.5 aging periods ago
        key = (utcnow() - timedelta(seconds=2.5 * DEFAULT_AGING)).timestamp() - 50 * DEFAULT_AGING
        set_job(db, job_id, rank_key=key)
    bobs = submit(db, queue, bob)
    # The whole priority rose together: bob's new job is on the backlog's level, and goes
    # first for the smaller share; a lower priority that waited less stays below.
    low = submit(db, queue, bob, priority=49)
    assert [take(db, queue, f"w{n}").job_id for n in range(5)] == [bobs, *backlog, low]


def test_fair_share_puts_the_owner_with_less_usage_first(db, queue, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    set_user(db, alice, usage=5000.0, usage_at=utcnow())
    alices = [submit(db, queue, alice) for _ in range(2)]
    bobs = submit(db, queue, bob)
    assert take(db, queue, policy=FIFO).job_id == alices[0]  # fair share off: the oldest
    assert take(db, queue).job_id == bobs  # on: bob has used less
    assert take(db, queue).job_id == alices[1]


def test_what_runs_now_counts_in_the_share(db, queue, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    running = submit(db, queue, alice)
    assert take(db, queue).job_id == running
    set_job(db, running, claimed_at=utcnow() - timedelta(seconds=300))
    alices_next = submit(db, queue, alice)
    bobs = submit(db, queue, bob)
    assert take(db, queue, "w2").job_id == bobs
    assert take(db, queue, "w3").job_id == alices_next


def test_a_job_that_fits_goes_before_a_larger_one_that_cannot_start_here(db, queue, accounts):
    alice = accounts["alice"].user_id
    big = submit(db, queue, alice, devices=2)
    small = submit(db, queue, alice)
    assert take(db, queue, "one-device", devices=1).job_id == small
    assert take(db, queue, "one-device", devices=1) is None
    assert take(db, queue, "two-devices", devices=2).job_id == big


def test_an_owner_at_their_running_quota_waits_and_others_go_ahead(db, queue, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    set_user(db, alice, max_running=1)
    first, second = submit(db, queue, alice), submit(db, queue, alice)
    bobs = submit(db, queue, bob)
    work = take(db, queue, "w1")
    assert work.job_id == first
    assert take(db, queue, "w2").job_id == bobs
    assert take(db, queue, "w3") is None  # alice's second waits for her first
    assert jobs.finish(db, first, work.attempt, JobStatus.SUCCEEDED, "done", "w1")
    assert take(db, queue, "w3").job_id == second


def test_a_device_quota_counts_devices_in_use(db, queue, accounts):
    alice = accounts["alice"].user_id
    set_user(db, alice, max_devices=3)
    two = submit(db, queue, alice, devices=2)
    another_two = submit(db, queue, alice, devices=2)
    one = submit(db, queue, alice, devices=1)
    assert take(db, queue, "w1", devices=2).job_id == two
    # Two more would make four: alice's 2-device job waits; her 1-device job fits the quota,
    # but as her best job is held back, nothing of hers starts until the first ends.
    assert take(db, queue, "w2", devices=2) is None
    assert jobs.get_job(db, another_two).status == "queued"
    assert jobs.get_job(db, one).status == "queued"


def test_concurrent_claims_never_pass_a_running_quota(db, queue, accounts):
    alice = accounts["alice"].user_id
    set_user(db, alice, max_running=2)
    for _ in range(10):
        submit(db, queue, alice)
    barrier, got = threading.Barrier(8), []

    def claim(n: int) -> None:
        barrier.wait()
        got.append(take(db, queue, f"w{n}"))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for work in got if work is not None) == 2
    with db.session() as session:
        running = session.query(Job).filter(Job.owner_id == alice, Job.status == "running")
        assert running.count() == 2


def test_multi_node_reservations_go_one_at_a_time_and_first(db, queue, accounts):
    alice = accounts["alice"].user_id
    for name in ("w1", "w2", "w3"):
        register(db, name, queue)
    first, second = submit(db, queue, alice, nodes=2), submit(db, queue, alice, nodes=2)
    single = submit(db, queue, alice, priority="low")
    lead = take(db, queue, "w1")
    assert (lead.job_id, lead.node_rank) == (first, None)
    assert nodes.reserve_first(db, first, lead.attempt, "w1", "127.0.0.1", 1234)
    # While the first reserves, a free worker takes its free rank, not new work.
    joined = take(db, queue, "w2")
    assert (joined.job_id, joined.attempt, joined.node_rank) == (first, lead.attempt, 1)
    # The first holds both workers: the next gang's round may start.
    lead2 = take(db, queue, "w3")
    assert (lead2.job_id, lead2.node_rank) == (second, None)
    third = submit(db, queue, alice, nodes=2)
    assert nodes.reserve_first(db, second, lead2.attempt, "w3", "127.0.0.1", 1235)
    # While the second reserves, no third round starts: the next free worker joins it.
    joined = take(db, queue, "w4")
    assert (joined.job_id, joined.node_rank) == (second, 1)
    assert jobs.get_job(db, third).status == "queued"
    assert jobs.get_job(db, single).status == "queued"


def test_a_multi_node_job_more_than_the_live_workers_hold_is_left_queued(db, queue, accounts):
    alice = accounts["alice"].user_id
    register(db, "w1", queue)
    gang = submit(db, queue, alice, nodes=2)
    single = submit(db, queue, alice, priority="low")
    assert take(db, queue, "w1").job_id == single
    assert jobs.get_job(db, gang).status == "queued"


def test_an_ended_attempt_charges_its_device_time_to_the_owner(db, queue, accounts):
    alice = accounts["alice"].user_id
    job_id = submit(db, queue, alice, devices=2)
    work = take(db, queue, devices=2)
    set_job(db, job_id, claimed_at=utcnow() - timedelta(seconds=100))
    assert jobs.finish(db, job_id, work.attempt, JobStatus.SUCCEEDED, "done", "w1")
    with db.session() as session:
        user = session.get(User, alice)
        assert 199.0 <= user.usage <= 202.0
        assert user.usage_at is not None
    # A requeue charges too, and the earlier usage has decayed only a little meanwhile.
    again = submit(db, queue, alice)
    work = take(db, queue)
    assert work.job_id == again
    set_job(db, again, claimed_at=utcnow() - timedelta(seconds=50))
    assert jobs.requeue(db, again, work.attempt, "drained", "w1") == JobStatus.QUEUED
    time.sleep(0.01)
    with db.session() as session:
        assert 248.0 <= session.get(User, alice).usage <= 252.0
