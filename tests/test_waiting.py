"""shared.jobs.waiting: a queued job's position and why it waits (pure reasons, the level
edge, and the counts on both backends), what each worker holds, and the job detail and
workers routes that show them."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from shared import jobs
from shared.infra.models import Job, User, utcnow
from shared.jobs import nodes as node_rows
from shared.jobs import waiting, workers
from shared.jobs.ranking import level
from shared.jobs.waiting import Facts, reason
from shared.spec import parse_spec
from tests.helpers import register_worker, tiny_spec

QUEUE = "waiting-q"
AGING = 600.0

# ---------------------------------------------------------------- pure: the reasons

BASE = Facts(
    queue=QUEUE, devices=1, nodes=1, ahead=0, higher=0, quota=None, live=1, fitting=1,
    idle_fitting=0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "next: waiting for a free worker"),
        ({"ahead": 1}, "1 job ahead"),
        ({"ahead": 7}, "7 jobs ahead"),
        ({"ahead": 7, "higher": 1}, "1 job of higher priority ahead"),
        ({"ahead": 7, "higher": 3}, "3 jobs of higher priority ahead"),
        ({"fitting": 0, "live": 0}, f"no live worker on queue {QUEUE!r}"),
        ({"fitting": 0, "devices": 4}, f"no live worker on queue {QUEUE!r} has 4 devices"),
        ({"fitting": 0, "ahead": 3}, f"no live worker on queue {QUEUE!r} has 1 device"),
        ({"nodes": 3, "idle_fitting": 1}, "waiting for 2 free workers"),
        ({"nodes": 2, "idle_fitting": 1}, "waiting for 1 free worker"),
        # Enough idle workers for every node: the next reason applies.
        (
            {"nodes": 2, "idle_fitting": 2, "higher": 2, "ahead": 2},
            "2 jobs of higher priority ahead",
        ),
    ],
)
def test_reason_names_the_first_that_applies(changes, expected):
    assert reason(replace(BASE, **changes)) == expected


def test_the_owners_quota_comes_before_everything():
    held = "your quota: 2 running (at most 2)"
    facts = replace(BASE, quota=held, nodes=4, higher=9, ahead=9, fitting=0, live=0)
    assert reason(facts) == held


def test_missing_workers_come_before_higher_priority():
    facts = replace(BASE, nodes=2, idle_fitting=0, higher=5, ahead=5)
    assert reason(facts) == "waiting for 2 free workers"


@given(
    now=st.floats(1.6e9, 2.0e9),
    aging=st.sampled_from([1.0, 60.0, 600.0, 3600.0]),
    waited=st.floats(0, 1e6),
    priority=st.integers(0, 100),
    other=st.floats(-2e5, 2e5),
)
def test_the_higher_level_edge_agrees_with_ranking_level(now, aging, waited, priority, other):
    key = now - waited - priority * aging
    mine = level(key, now, aging)
    edge = waiting.higher_level_edge(mine, now, aging)
    assert key > edge  # a job's own key is never of a higher level than itself
    other_key = key + other
    assert (other_key <= edge) == (level(other_key, now, aging) > mine) or math.isclose(
        other_key, edge, rel_tol=0, abs_tol=1e-3
    )


# ---------------------------------------------------------------- SQL, both backends


def queued(db, owner_id, *, priority=50, devices=1, nodes=1, queue=QUEUE, key=None, name="j"):
    """A queued job; `key` overrides its rank key (submit time less priority x aging)."""
    resources = {"queue": queue, "priority": priority, "devices": devices, "nodes": nodes}
    job = jobs.create_job(db, parse_spec(tiny_spec(name=name, resources=resources)), owner_id)
    if key is not None:
        with db.session() as session:
            session.execute(update(Job).where(Job.id == job.id).values(rank_key=key))
    return job.id


def worker(db, name, devices=1, queue=QUEUE):
    register_worker(db, name, queue, devices)


def wait_of(db, settings, job_id):
    return waiting.queue_wait(db, settings, job_id)


def test_position_is_priority_then_age_then_id_on_the_queue_alone(db, settings, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    now = utcnow().timestamp()
    base = now - 60  # submitted a minute ago: every one of them at its own priority's level
    order = [
        queued(db, bob, priority=75, key=base - 75 * AGING, name="high"),
        queued(db, None, key=base - 50 * AGING, name="nobody's"),
        queued(db, alice, key=base - 50 * AGING + 1, name="same level, younger"),
        queued(db, bob, key=base - 50 * AGING + 1, name="same key, larger id"),
        queued(db, alice, priority=25, key=base - 25 * AGING, name="low"),
    ]
    queued(db, alice, priority=99, key=base - 99 * AGING, queue="elsewhere")
    running = queued(db, bob, priority=99, key=base - 99 * AGING)
    assert jobs.claim(db, running, "somewhere", 60) == 1
    worker(db, "idle-one")
    got = [wait_of(db, settings, job_id) for job_id in order]
    assert [w.position for w in got] == [1, 2, 3, 4, 5]
    assert [w.reason for w in got] == [
        "next: waiting for a free worker",
        "1 job of higher priority ahead",
        "1 job of higher priority ahead",
        "1 job of higher priority ahead",
        "4 jobs of higher priority ahead",
    ]
    assert wait_of(db, settings, running) is None
    with pytest.raises(jobs.JobNotFound):
        wait_of(db, settings, 10**9)


def test_aging_raises_a_waiting_job_past_younger_higher_ones(db, settings, accounts):
    alice = accounts["alice"].user_id
    now = utcnow().timestamp()
    # Priority 25, waiting 30 levels: level 55, ahead of a fresh priority-50 job.
    old = queued(db, alice, priority=25, key=now - 30 * AGING - 25 * AGING)
    fresh = queued(db, alice, key=now - 5 - 50 * AGING)
    worker(db, "w")
    assert wait_of(db, settings, old) == waiting.Wait(1, "next: waiting for a free worker")
    assert wait_of(db, settings, fresh) == waiting.Wait(2, "1 job of higher priority ahead")


def test_same_level_jobs_ahead_and_no_worker_reasons(db, settings, accounts):
    alice = accounts["alice"].user_id
    now = utcnow().timestamp() - 10
    first, second = (queued(db, alice, key=now - 50 * AGING + i) for i in range(2))
    big = queued(db, alice, devices=2, key=now - 50 * AGING + 2)
    assert wait_of(db, settings, second).reason == f"no live worker on queue {QUEUE!r}"
    worker(db, "small")
    assert wait_of(db, settings, first).reason == "next: waiting for a free worker"
    assert wait_of(db, settings, second) == waiting.Wait(2, "1 job ahead")
    assert wait_of(db, settings, big) == waiting.Wait(
        3, f"no live worker on queue {QUEUE!r} has 2 devices"
    )
    worker(db, "big", devices=2)
    assert wait_of(db, settings, big).reason == "2 jobs ahead"


def test_the_owners_quota_holds_the_job(db, settings, accounts):
    alice = accounts["alice"].user_id
    with db.session() as session:
        session.execute(update(User).where(User.id == alice).values(max_running=1))
    started = queued(db, alice)
    assert jobs.claim(db, started, "w", 60) == 1
    held = queued(db, alice)
    assert wait_of(db, settings, held) == waiting.Wait(1, "your quota: 1 running (at most 1)")
    with db.session() as session:
        session.execute(
            update(User).where(User.id == alice).values(max_running=None, max_devices=2)
        )
    big = queued(db, alice, devices=2)
    assert wait_of(db, settings, big).reason == (
        "your quota: 1 devices in use, this job needs 2 (at most 2)"
    )


def test_a_multi_node_job_waits_for_free_workers(db, settings, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    gang = queued(db, alice, nodes=3)
    for name in ("w1", "w2", "w3"):
        worker(db, name)
    assert wait_of(db, settings, gang).reason == "next: waiting for a free worker"
    busy = queued(db, bob)
    assert jobs.claim(db, busy, "w1", 60) == 1
    assert wait_of(db, settings, gang).reason == "waiting for 1 free worker"
    # A rank of another multi-node attempt holds a worker too.
    other = queued(db, bob, nodes=2)
    attempt = jobs.claim(db, other, "w2", 60)
    assert node_rows.reserve_first(db, other, attempt, "w2", "127.0.0.1", 29500)
    assert node_rows.take_rank(db, other, attempt, 2, "w3") == 1
    assert wait_of(db, settings, gang).reason == "waiting for 3 free workers"


def test_holdings_name_the_job_its_owner_and_the_rank(db, settings, accounts):
    alice = accounts["alice"].user_id
    for name in ("lead", "member", "solo", "idle"):
        worker(db, name)
    gang = queued(db, alice, nodes=2, priority=80, name="gang")
    attempt = jobs.claim(db, gang, "lead", 60)
    assert node_rows.reserve_first(db, gang, attempt, "lead", "127.0.0.1", 29500)
    assert node_rows.take_rank(db, gang, attempt, 2, "member") == 1
    solo = queued(db, None, name="solo job")
    assert jobs.claim(db, solo, "solo", 60) == 1
    with db.session() as session:
        session.execute(update(Job).where(Job.id == solo).values(preempt_by=gang))
    held = waiting.holdings(db, workers.list_workers(db))
    assert set(held) == {"lead", "member", "solo"}
    assert (held["lead"].job_id, held["lead"].node_rank, held["lead"].owner) == (gang, 0, "alice")
    assert (held["member"].node_rank, held["member"].priority, held["member"].nodes) == (1, 80, 2)
    assert held["solo"].node_rank is None and held["solo"].owner is None
    assert held["solo"].preempt_by == gang and held["solo"].name == "solo job"
    assert all(h.since is not None for h in held.values())
    assert waiting.holdings(db, []) == {}


# ---------------------------------------------------------------- the routes


def test_job_detail_says_where_a_queued_job_stands(client, db, settings, accounts):
    worker(db, "w")
    high = client.post(
        "/api/v1/jobs", json=tiny_spec(resources={"queue": QUEUE, "priority": "high"})
    ).json["id"]
    low = client.post("/api/v1/jobs", json=tiny_spec(resources={"queue": QUEUE})).json["id"]
    detail = client.get(f"/api/v1/jobs/{low}").json
    assert detail["queue_position"] == 2
    assert detail["wait_reason"] == "1 job of higher priority ahead"
    assert (detail["priority"], detail["preemptions"], detail["preempt_by"]) == (50, 0, None)
    assert detail["nodes"] == 1
    listed = {j["id"]: j["priority"] for j in client.get("/api/v1/jobs").json["jobs"]}
    assert listed == {high: 75, low: 50}
    board = client.get("/api/v1/jobs/board").json["jobs"]
    assert {j["id"]: j["priority"] for j in board} == listed

    assert jobs.claim(db, high, "w", 60) == 1
    with db.session() as session:
        session.execute(update(Job).where(Job.id == high).values(preempt_by=low, preemptions=2))
    running = client.get(f"/api/v1/jobs/{high}").json
    assert running["queue_position"] is None and running["wait_reason"] is None
    assert (running["preempt_by"], running["preemptions"]) == (low, 2)
    now_first = client.get(f"/api/v1/jobs/{low}").json
    assert (now_first["queue_position"], now_first["wait_reason"]) == (
        1, "next: waiting for a free worker"
    )  # fmt: skip


def test_workers_show_what_each_holds_to_those_who_may_see_it(client, db, accounts):
    for name in ("w-alice", "w-bob", "w-idle"):
        worker(db, name)
    alice_job = queued(db, accounts["alice"].user_id, priority=60, name="alice's <b>job</b>")
    bob_job = queued(db, accounts["bob"].user_id, name="bob's secret")
    for name, job_id in (("w-alice", alice_job), ("w-bob", bob_job)):
        assert jobs.claim(db, job_id, name, 60) == 1
        workers.set_current_job(db, name, job_id)

    by_name = {w["name"]: w for w in client.get("/api/v1/workers").json["workers"]}
    held = by_name["w-alice"]["job"]
    assert held["id"] == alice_job and held["name"] == "alice's <b>job</b>"
    assert (held["owner"], held["priority"], held["node_rank"], held["nodes"]) == (
        "alice", 60, None, 1
    )  # fmt: skip
    assert held["since"] is not None and held["url"].endswith(f"/api/v1/jobs/{alice_job}")
    assert by_name["w-bob"]["job"] is None and by_name["w-bob"]["busy"]
    assert by_name["w-idle"]["job"] is None and not by_name["w-idle"]["busy"]
    admin = client.get("/api/v1/workers", headers=accounts["root"].headers).json
    assert {w["name"]: w for w in admin["workers"]}["w-bob"]["job"]["owner"] == "bob"


def test_an_older_job_of_the_same_priority_is_never_of_higher_priority(db, settings, accounts):
    """A priority rises together (ranking.levels): a backlog that waited past an aging
    period is ahead, but not of a higher priority."""
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    now = utcnow().timestamp()
    for _ in range(3):
        queued(db, alice, key=now - 2.5 * AGING - 50 * AGING)
    fresh = queued(db, bob, key=now - 5 - 50 * AGING)
    worker(db, "w")
    assert wait_of(db, settings, fresh) == waiting.Wait(4, "3 jobs ahead")
