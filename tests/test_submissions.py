"""Submissions in groups, on SQLite and PostgreSQL and a real Redis: a batch of jobs is one
transaction and one Redis round trip, and each submission keeps its own rows and answer."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sqlalchemy.exc import IntegrityError

from shared import jobs
from shared.infra.models import Job, JobDataset, JobEvent
from shared.infra.queue import RUN_JOB_TASK, JobQueue, job_id_of, job_ids_with_messages
from shared.jobs import IdempotentReplay, NewJob
from shared.spec import parse_spec
from tests.conftest import authed_client
from tests.helpers import SMALL_TSV, row_count, tiny_spec, upload

TSV = {"format": "tsv", "text_column": "sentence", "label_column": "label"}


def test_a_batch_keeps_each_jobs_owner_actor_and_datasets(client, db, accounts):
    train = upload(client, SMALL_TSV, "a.tsv", **TSV).json["id"]
    validation = upload(client, SMALL_TSV + b"extra row\tpos\n", "b.tsv", **TSV).json["id"]
    alice, bob = accounts["alice"], accounts["bob"]
    batch = [
        NewJob(parse_spec(tiny_spec(name="first")), alice.user_id, "alice", {"train": train}),
        NewJob(parse_spec(tiny_spec(name="second")), bob.user_id, "bob"),
        NewJob(
            parse_spec(tiny_spec(name="third", resources={"queue": "elsewhere"})),
            alice.user_id,
            "alice",
            {"train": train, "validation": validation},
            idempotency_key="third-key",
            estimate={"parameters": 123},
        ),
    ]
    ids = jobs.create_jobs(db, batch)
    assert len(ids) == 3 and ids == sorted(ids) and len(set(ids)) == 3
    first, second, third = (jobs.get_job(db, job_id) for job_id in ids)
    assert (first.name, first.owner_id, first.queue) == ("first", alice.user_id, "default")
    assert (second.name, second.owner_id) == ("second", bob.user_id)
    assert (third.name, third.queue, third.idempotency_key) == ("third", "elsewhere", "third-key")
    assert third.estimate == {"parameters": 123} and first.estimate is None
    assert third.spec == batch[2].spec.model_dump(mode="json")
    for job in (first, second, third):
        assert (job.status, job.attempt, job.epoch, job.step, job.cancel_requested) == (
            "queued",
            0,
            0,
            0,
            False,
        )
        assert job.enqueued_at is not None and job.created_at == job.enqueued_at
    links = {
        job_id: {role: d.id for role, d in jobs.dataset_links(db, job_id).items()} for job_id in ids
    }
    assert links == {
        ids[0]: {"train": train},
        ids[1]: {},
        ids[2]: {"train": train, "validation": validation},
    }
    events = {job_id: jobs.job_events(db, job_id) for job_id in ids}
    assert [(e.actor, e.to_status, e.message) for e in events[ids[0]]] == [
        ("alice", "queued", "submitted")
    ]
    assert [e.actor for e in events[ids[1]]] == ["bob"]
    assert [e.actor for e in events[ids[2]]] == ["alice"]


def test_a_batch_is_all_or_none(db, accounts):
    alice = accounts["alice"]
    spec = parse_spec(tiny_spec())
    jobs.create_jobs(db, [NewJob(spec, alice.user_id, idempotency_key="taken")])
    before = (row_count(db, Job), row_count(db, JobEvent), row_count(db, JobDataset))
    with pytest.raises(IntegrityError):
        jobs.create_jobs(
            db,
            [
                NewJob(spec, alice.user_id),
                NewJob(spec, alice.user_id, idempotency_key="taken"),
                NewJob(spec, alice.user_id),
            ],
        )
    assert (row_count(db, Job), row_count(db, JobEvent), row_count(db, JobDataset)) == before


def test_a_reused_key_in_a_batch_costs_only_that_submission(db, accounts):
    alice, bob = accounts["alice"], accounts["bob"]
    spec = parse_spec(tiny_spec())
    [earlier] = jobs.create_jobs(db, [NewJob(spec, alice.user_id, idempotency_key="k-old")])
    results = jobs.submit_jobs(
        db,
        [
            NewJob(spec, alice.user_id, idempotency_key="k-old"),  # used before the batch
            NewJob(spec, alice.user_id),
            NewJob(spec, alice.user_id, idempotency_key="k-new"),
            NewJob(spec, alice.user_id, idempotency_key="k-new"),  # a retry inside the batch
            NewJob(spec, bob.user_id, idempotency_key="k-new"),  # keys are per user
        ],
    )
    assert isinstance(results[0], IdempotentReplay) and results[0].job.id == earlier
    assert all(isinstance(r, int) for r in (results[1], results[2], results[4]))
    assert isinstance(results[3], IdempotentReplay) and results[3].job.id == results[2]
    assert row_count(db, Job) == 4 and row_count(db, JobEvent) == 4


def test_messages_are_the_ones_celery_itself_writes(settings):
    """Each message equals what Celery's own send_task puts on Redis, but for the parts
    that differ per message (delivery tag) or per producer (origin, reply address)."""
    queue = JobQueue(settings)
    broker = redis.Redis.from_url(settings.redis_url)
    name = f"{settings.default_queue}-format"
    broker.delete(name)
    queue.app.send_task(RUN_JOB_TASK, args=[41], queue=name, retry=False, task_id="job-41.a")
    theirs = json.loads(broker.rpop(name))
    ours = json.loads(queue.message(RUN_JOB_TASK, "job-41.a", [41], name))

    def comparable(message: dict) -> dict:
        message = json.loads(json.dumps(message))
        message["body"] = json.loads(base64.b64decode(message["body"]))
        for key in ("delivery_tag", "reply_to"):
            message["properties"].pop(key)
        for key in ("origin", "ignore_result"):
            message["headers"].pop(key)
        return message

    assert comparable(ours) == comparable(theirs)
    assert ours["headers"]["ignore_result"] is True
    assert ours["properties"]["delivery_tag"] != theirs["properties"]["delivery_tag"]
    queue.app.close()


def test_a_batch_lands_in_order_on_each_queue(settings):
    queue = JobQueue(settings)
    broker = redis.Redis.from_url(settings.redis_url)
    first, second = (f"{settings.default_queue}-fifo-{n}" for n in (1, 2))
    broker.delete(first, second)
    queue.enqueue_jobs([(1, first), (2, second), (3, first), (4, first), (5, second)])
    # Workers pop from the tail: what was enqueued first runs first.
    assert [job_id_of(broker.rpop(first)) for _ in range(3)] == [1, 3, 4]
    assert [job_id_of(broker.rpop(second)) for _ in range(2)] == [2, 5]
    queue.enqueue_jobs([(6, first)])
    assert job_ids_with_messages(broker, {first: [1, 6], second: [2]}, 60) == {6}
    queue.enqueue_jobs([])  # nothing to send: no round trip, no error
    assert broker.llen(first) == 1
    queue.app.close()


def test_concurrent_posts_each_get_their_own_job_and_message(app, accounts, db, settings):
    """Thirty-two clients at once through one API process: every answer is a 201 with its
    own id, every job is stored once with one event, and has exactly one message."""
    name = f"{settings.default_queue}-burst"
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(name)
    start = threading.Barrier(32)

    def post(n: int):
        client = authed_client(app, accounts["alice" if n % 2 else "bob"])
        start.wait(10)
        spec = tiny_spec(name=f"burst-{n}", resources={"queue": name})
        return n, client.post("/api/v1/jobs", json=spec)

    with ThreadPoolExecutor(32) as pool:
        answers = dict(pool.map(post, range(32)))
    assert {r.status_code for r in answers.values()} == {201}
    assert all(r.json["enqueued"] is True for r in answers.values())
    ids = {n: r.json["id"] for n, r in answers.items()}
    assert len(set(ids.values())) == 32
    for n, job_id in ids.items():
        job = jobs.get_job(db, job_id)
        assert job.name == f"burst-{n}"
        assert job.owner_id == accounts["alice" if n % 2 else "bob"].user_id
        assert [e.actor for e in jobs.job_events(db, job_id)] == ["alice" if n % 2 else "bob"]
    assert row_count(db, Job) == 32
    messages = [job_id_of(m) for m in broker.lrange(name, 0, -1)]
    assert sorted(messages) == sorted(ids.values())


def test_a_failed_enqueue_answers_each_caller_and_notes_each_job(settings, db, accounts):
    from dataclasses import replace

    from api import create_app
    from cli.services import free_port

    dead = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(dead, {"TESTING": True})
    start = threading.Barrier(8)

    def post(n: int):
        client = authed_client(app, accounts["alice"])
        start.wait(10)
        return client.post("/api/v1/jobs", json=tiny_spec(name=f"lost-{n}"))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert {(r.status_code, r.json["enqueued"]) for r in answers} == {(201, False)}
    for response in answers:
        job_id = response.json["id"]
        assert jobs.get_job(db, job_id).status == "queued"
        notes = [e.message for e in jobs.job_events(db, job_id)]
        assert notes[0] == "submitted" and notes[1].startswith("enqueue failed")
    app.extensions["seqtrain"].db.dispose()


def lrange_calls(broker: redis.Redis) -> int:
    return int(broker.info("commandstats").get("cmdstat_lrange", {}).get("calls", 0))


def test_finding_the_oldest_messages_reads_only_the_queues_tail(settings):
    """The reconciler asks about the longest-waiting jobs: with 2,000 messages queued that
    takes one read of the tail, counted by Redis itself, not a read of the whole list."""
    queue = JobQueue(settings)
    broker = redis.Redis.from_url(settings.redis_url)
    name = f"{settings.default_queue}-backlog"
    broker.delete(name)
    queue.enqueue_jobs((job_id, name) for job_id in range(1, 2001))
    before = lrange_calls(broker)
    assert job_ids_with_messages(broker, {name: [1, 2, 3]}, 60) == {1, 2, 3}
    assert lrange_calls(broker) - before == 1
    # Deeper in the list: more chunks (they overlap by a quarter), still found.
    before = lrange_calls(broker)
    assert job_ids_with_messages(broker, {name: [1, 1500]}, 60) == {1, 1500}
    assert 2 <= lrange_calls(broker) - before <= 5
    # A job whose message is gone costs one read of the whole list, and is reported.
    before = lrange_calls(broker)
    assert job_ids_with_messages(broker, {name: [7, 99_999]}, 60) == {7}
    assert lrange_calls(broker) - before == -(-2000 // 375)  # ceil(2000 / 375) chunks
    assert job_ids_with_messages(broker, {name: []}, 60) == set()
    broker.delete(name)
    queue.app.close()


def test_a_message_a_worker_holds_counts_only_while_fresh(settings):
    """Celery keeps delivered, unacknowledged messages in the `unacked` hash; one held longer
    than the grace belongs to a worker that died before claiming its job."""
    queue = JobQueue(settings)
    broker = redis.Redis.from_url(settings.redis_url)
    name = f"{settings.default_queue}-held"
    broker.delete(name)
    now = time.time()
    for job_id, delivered in ((11, now - 1), (12, now - 600)):
        message = json.loads(queue.message(RUN_JOB_TASK, f"job-{job_id}.x", [job_id], name))
        tag = f"tag-{job_id}-{uuid.uuid4().hex}"
        broker.hset("unacked", tag, json.dumps([message, "", name]))
        broker.zadd("unacked_index", {tag: delivered})
    try:
        assert job_ids_with_messages(broker, {name: [11, 12]}, 60) == {11}
        assert job_ids_with_messages(broker, {"another-queue": [11]}, 60) == set()
    finally:
        for job_id in (11, 12):
            for tag in [t for t in broker.hkeys("unacked") if f"tag-{job_id}-".encode() in t]:
                broker.hdel("unacked", tag)
                broker.zrem("unacked_index", tag)
    queue.app.close()


def test_the_reconciler_checks_the_longest_waiting_jobs_first(db):
    """A requeued job waits behind the jobs enqueued before its requeue, whatever its id:
    the reconciler asks Redis about jobs in the order their messages queue up."""
    from datetime import timedelta

    from sqlalchemy import update

    from shared.infra.models import utcnow

    ids = jobs.create_jobs(db, [NewJob(parse_spec(tiny_spec()), None)] * 4)
    now = utcnow()
    ages = {ids[0]: 30, ids[1]: 90, ids[2]: 60, ids[3]: 5}  # seconds since the enqueue
    with db.session() as session:
        for job_id, age in ages.items():
            session.execute(
                update(Job).where(Job.id == job_id).values(enqueued_at=now - timedelta(seconds=age))
            )
    waiting = jobs.queued_awaiting_message(db, older_than_seconds=10)
    assert [job_id for job_id, _ in waiting] == [ids[1], ids[2], ids[0]]
    assert jobs.queued_awaiting_message(db, older_than_seconds=10, limit=1) == [(ids[1], "default")]
    jobs.mark_enqueued(db, [ids[1], ids[2]])  # just enqueued again: not due for a while
    assert [job_id for job_id, _ in jobs.queued_awaiting_message(db, 10)] == [ids[0]]


def test_concurrent_retries_with_one_key_make_one_job(app, accounts, db):
    """Eight copies of one POST with the same Idempotency-Key at once (a client retrying
    in a hurry): one 201, seven replays of that job, one row, and nobody else's
    submission in the same group is lost."""
    start = threading.Barrier(12)
    spec = tiny_spec(name="once", resources={"queue": "nobody-listens"})

    def post(n: int):
        client = authed_client(app, accounts["alice"])
        start.wait(10)
        if n < 8:
            return client.post("/api/v1/jobs", json=spec, headers={"Idempotency-Key": "hurry"})
        return client.post("/api/v1/jobs", json=tiny_spec(name=f"other-{n}"))

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, range(12)))
    keyed, others = answers[:8], answers[8:]
    assert sorted(r.status_code for r in keyed) == [200] * 7 + [201]
    assert len({r.json["id"] for r in keyed}) == 1
    assert all(
        r.headers.get("Idempotent-Replayed") == "true" for r in keyed if r.status_code == 200
    )
    assert {r.status_code for r in others} == {201} and len({r.json["id"] for r in others}) == 4
    assert row_count(db, Job) == 5 and row_count(db, JobEvent) == 5
