"""A user's limits, on SQLite and PostgreSQL: an admin sets them (PATCH /api/v1/users/<name>,
`seqtrain users set`), and a submission past them is refused before anything is stored:
priority, devices and preemptible with a 422 naming the field, max_queued with a 429,
which holds under concurrent submissions across API processes."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import redis
import requests
from click.testing import CliRunner
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from api import create_app
from cli.main import main as seqtrain
from shared import jobs
from shared.infra.models import Job, User
from shared.infra.queue import job_ids_with_messages
from shared.jobs import IdempotentReplay, NewJob
from shared.jobs.errors import QuotaExceeded
from shared.spec import parse_spec
from tests.conftest import ROOT, authed_client, worker_env
from tests.helpers import row_count, tiny_spec

NO_LIMITS = {"max_priority": None, "max_running": None, "max_devices": None, "max_queued": None}


@pytest.fixture
def queue() -> str:
    """A queue no worker consumes: submitted jobs stay queued."""
    return f"quota-{uuid.uuid4().hex[:8]}"


def limit(db, name: str, **limits) -> None:
    with db.session() as session:
        session.execute(update(User).where(User.name == name).values(**limits))


def queued(db, owner_id: int) -> int:
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count()).where(Job.owner_id == owner_id, Job.status == "queued")
            )
        )


def spec_on(queue: str, **resources) -> dict:
    return tiny_spec(name="quota", resources={"queue": queue, **resources})


# ---------------------------------------------------------------- setting limits


def test_an_admin_sets_limits_and_null_clears_one(app, accounts):
    root, alice = authed_client(app, accounts["root"]), authed_client(app, accounts["alice"])
    answer = root.patch("/api/v1/users/alice", json={"max_priority": 60, "max_queued": 10})
    assert answer.status_code == 200, answer.json
    assert answer.json == {
        **NO_LIMITS,
        "max_priority": 60,
        "max_queued": 10,
        "id": accounts["alice"].user_id,
        "name": "alice",
        "is_admin": False,
    }
    cleared = root.patch("/api/v1/users/alice", json={"max_priority": None, "max_running": 0})
    assert cleared.status_code == 200
    assert {k: cleared.json[k] for k in NO_LIMITS} == {
        **NO_LIMITS,
        "max_running": 0,
        "max_queued": 10,
    }
    mine = alice.get("/api/v1/users/alice")  # a user sees their own limits
    assert mine.status_code == 200 and mine.json == cleared.json
    listed = root.get("/api/v1/users").json["users"]
    assert [u["name"] for u in listed] == ["alice", "bob", "root"]
    assert listed[0] == cleared.json and listed[1] == {**listed[1], **NO_LIMITS}


def test_only_an_admin_sets_or_lists_limits(app, accounts):
    alice = authed_client(app, accounts["alice"])
    for name in ("alice", "bob", "nobody"):
        refused = alice.patch(f"/api/v1/users/{name}", json={"max_queued": 100})
        assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert alice.get("/api/v1/users").status_code == 403
    assert alice.get("/api/v1/users/bob").status_code == 403


def test_an_unknown_user_is_a_404(app, accounts):
    root = authed_client(app, accounts["root"])
    for name in ("nobody", "no%20body"):
        answer = root.patch(f"/api/v1/users/{name}", json={"max_queued": 1})
        assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"
    assert root.get("/api/v1/users/nobody").status_code == 404


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"max_priority": 101}, "max_priority"),
        ({"max_priority": -1}, "max_priority"),
        ({"max_running": "5"}, "max_running"),
        ({"max_devices": 1.5}, "max_devices"),
        ({"max_devices": True}, "max_devices"),
        ({"max_queued": -1}, "max_queued"),
        ({"max_queued": 2**31}, "max_queued"),
        ({"max_queue": 3}, "max_queue"),
        ({}, ""),
    ],
)
def test_bad_limits_are_a_422_naming_the_field(app, accounts, db, body, path):
    answer = authed_client(app, accounts["root"]).patch("/api/v1/users/alice", json=body)
    assert answer.status_code == 422, answer.json
    assert [f["path"] for f in answer.json["error"]["fields"]] == [path]
    with db.session() as session:  # nothing changed
        user = session.get(User, accounts["alice"].user_id)
        assert (user.max_priority, user.max_queued) == (None, None)


def run_cli(settings, *args):
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    return CliRunner().invoke(seqtrain, args, env=env)


def test_users_set_and_list_on_the_command_line(settings, db, accounts):
    done = run_cli(settings, "users", "set", "alice", "--max-priority", "60", "--max-queued", "5")
    assert done.exit_code == 0, done.output
    assert "user alice: max_priority 60, max_running none, max_devices none, max_queued 5" in (
        done.output
    )
    cleared = run_cli(settings, "users", "set", "alice", "--max-queued", "none", "--json")
    assert json.loads(cleared.output) == {
        **NO_LIMITS,
        "max_priority": 60,
        "id": accounts["alice"].user_id,
        "name": "alice",
        "is_admin": False,
    }
    run_cli(settings, "users", "set", "bob", "--max-devices", "0")
    listed = run_cli(settings, "users", "list").output.splitlines()
    assert listed[0].split()[1:] == ["alice", "max_priority=60"]
    assert listed[1].split()[1:] == ["bob", "max_devices=0"]
    assert listed[2].split()[1:] == ["root", "(admin)"]
    rows = json.loads(run_cli(settings, "users", "list", "--json").output)
    assert rows[1] == {**rows[1], **NO_LIMITS, "max_devices": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name a limit: --max-priority, --max-running, --max-devices or --max-queued"),
        (("--max-priority", "101"), "--max-priority: Input should be less than or equal to 100"),
        (("--max-running", "-1"), "--max-running: Input should be greater than or equal to 0"),
        (("--max-queued", "ten"), "--max-queued: 'ten' is not a whole number or 'none'"),
    ],
)
def test_users_set_refuses_bad_limits(settings, db, accounts, args, message):
    refused = run_cli(settings, "users", "set", "alice", *args)
    assert refused.exit_code == 1 and f"error: {message}" in refused.output
    with db.session() as session:
        assert session.get(User, accounts["alice"].user_id).max_running is None


def test_users_set_names_an_unknown_user(settings, db):
    refused = run_cli(settings, "users", "set", "nobody", "--max-queued", "1")
    assert refused.exit_code == 1 and "no user named 'nobody'" in refused.output


# ---------------------------------------------------------------- a changed soft limit


@pytest.fixture
def broker(settings):
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


def held_jobs(client, db, broker, queue: str) -> list[int]:
    """Three of alice's jobs held by max_running 0, their messages spent (as on workers
    that could not start them)."""
    limit(db, "alice", max_running=0)
    ids = [client.post("/api/v1/jobs", json=spec_on(queue)).json["id"] for _ in range(3)]
    broker.delete(queue)
    assert job_ids_with_messages(broker, {queue: ids}, 60) == set()
    return ids


def test_a_changed_soft_limit_wakes_the_jobs_it_held(app, client, db, accounts, queue, broker):
    ids = held_jobs(client, db, broker, queue)
    root = authed_client(app, accounts["root"])
    assert root.patch("/api/v1/users/alice", json={"max_queued": 50}).status_code == 200
    assert job_ids_with_messages(broker, {queue: ids}, 60) == set()  # not a soft limit
    assert root.patch("/api/v1/users/alice", json={"max_running": 2}).status_code == 200
    assert job_ids_with_messages(broker, {queue: ids}, 60) == set(ids)


def test_users_set_wakes_them_too(settings, client, db, queue, broker):
    ids = held_jobs(client, db, broker, queue)
    done = run_cli(settings, "users", "set", "alice", "--max-running", "none")
    assert done.exit_code == 0, done.output
    assert job_ids_with_messages(broker, {queue: ids}, 60) == set(ids)


def test_with_redis_down_the_limit_is_set_all_the_same(settings, client, db, accounts, queue):
    assert client.post("/api/v1/jobs", json=spec_on(queue)).status_code == 201  # one to wake
    app = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    try:
        root = authed_client(app, accounts["root"])
        answer = root.patch("/api/v1/users/alice", json={"max_running": 3})
        assert answer.status_code == 200 and answer.json["max_running"] == 3
    finally:
        app.extensions["seqtrain"].db.dispose()
    no_redis = CliRunner().invoke(
        seqtrain,
        ("users", "set", "alice", "--max-devices", "4"),
        env={"DATABASE_URL": settings.database_url, "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert no_redis.exit_code == 0, no_redis.output
    assert "Redis unreachable: jobs the limit held start at the reconciler's next pass" in (
        no_redis.output
    )
    with db.session() as session:
        user = session.get(User, accounts["alice"].user_id)
        assert (user.max_running, user.max_devices) == (3, 4)


# ---------------------------------------------------------------- hard limits at submit


def refused_fields(answer) -> list[tuple[str, str]]:
    assert answer.status_code == 422, answer.json
    return [(f["path"], f["message"]) for f in answer.json["error"]["fields"]]


def test_a_priority_above_the_limit_is_a_422(client, db, accounts, queue):
    limit(db, "alice", max_priority=60)
    answer = client.post("/api/v1/jobs", json=spec_on(queue, priority=90))
    assert refused_fields(answer) == [
        ("resources.priority", "priority 90 is above your limit of 60")
    ]
    assert answer.json["error"]["message"] == "invalid job spec: resources.priority"
    named = client.post("/api/v1/jobs", json=spec_on(queue, priority="high"))
    assert refused_fields(named) == [
        ("resources.priority", "priority 75 is above your limit of 60")
    ]
    assert row_count(db, Job) == 0
    assert client.post("/api/v1/jobs", json=spec_on(queue, priority=60)).status_code == 201


def test_only_an_admin_submits_a_job_that_cannot_be_preempted(app, client, db, accounts, queue):
    spec = spec_on(queue, preemptible=False)
    assert refused_fields(client.post("/api/v1/jobs", json=spec)) == [
        ("resources.preemptible", "only an admin may submit a job that cannot be preempted")
    ]
    assert row_count(db, Job) == 0
    admitted = authed_client(app, accounts["root"]).post("/api/v1/jobs", json=spec)
    assert admitted.status_code == 201
    assert jobs.get_job(db, admitted.json["id"]).preemptible is False


def test_a_job_needing_more_devices_than_the_limit_is_a_422(client, db, queue):
    limit(db, "alice", max_devices=4)
    multi = client.post("/api/v1/jobs", json=spec_on(queue, devices=2, nodes=3))
    assert refused_fields(multi) == [
        (
            "resources.devices",
            "2 devices x 3 nodes is above your limit of 4 devices at once: "
            "the job could never start",
        )
    ]
    one = client.post("/api/v1/jobs", json=spec_on(queue, devices=5))
    assert refused_fields(one)[0][1].startswith("5 devices is above your limit of 4 devices")
    assert row_count(db, Job) == 0
    assert client.post("/api/v1/jobs", json=spec_on(queue, devices=2, nodes=2)).status_code == 201


def test_every_limit_passed_is_named_at_once(client, db, queue):
    limit(db, "alice", max_priority=10, max_devices=0)
    answer = client.post("/api/v1/jobs", json=spec_on(queue, priority=11, preemptible=False))
    assert [path for path, _ in refused_fields(answer)] == [
        "resources.priority",
        "resources.preemptible",
        "resources.devices",
    ]


def assert_over_quota(answer, queued_now: int, limit_now: int) -> None:
    assert answer.status_code == 429, answer.json
    assert answer.headers["Retry-After"] == "30"
    error = answer.json["error"]
    assert error["code"] == "quota_exceeded"
    assert error["fields"] == [
        {"path": "max_queued", "message": f"{queued_now} queued of {limit_now}", "type": "quota"}
    ]


def test_past_max_queued_a_submission_is_a_429(app, client, db, accounts, queue):
    limit(db, "alice", max_queued=2)
    first, second = (client.post("/api/v1/jobs", json=spec_on(queue)) for _ in range(2))
    assert (first.status_code, second.status_code) == (201, 201)
    third = client.post("/api/v1/jobs", json=spec_on(queue))
    assert_over_quota(third, 2, 2)
    assert third.json["error"]["message"] == (
        "you have 2 jobs queued and your limit is 2; "
        "submit again once one of them has started or been cancelled"
    )
    bob = authed_client(app, accounts["bob"])  # the limit is alice's alone
    assert bob.post("/api/v1/jobs", json=spec_on(queue)).status_code == 201
    assert client.post(f"/api/v1/jobs/{first.json['id']}/cancel").status_code == 202
    retried = client.post(f"/api/v1/jobs/{first.json['id']}/retry")  # through submit too
    assert retried.status_code == 201
    assert_over_quota(client.post(f"/api/v1/jobs/{first.json['id']}/retry"), 2, 2)
    assert queued(db, accounts["alice"].user_id) == 2


def test_max_queued_zero_refuses_every_submission(client, db, queue):
    limit(db, "alice", max_queued=0)
    answer = client.post("/api/v1/jobs", json=spec_on(queue))
    assert_over_quota(answer, 0, 0)
    assert answer.json["error"]["message"] == "your account may not submit jobs (max_queued is 0)"
    assert row_count(db, Job) == 0


def test_a_retried_request_at_the_quota_gets_its_job(client, db, accounts, queue):
    limit(db, "alice", max_queued=1)
    key = {"Idempotency-Key": "once"}
    first = client.post("/api/v1/jobs", json=spec_on(queue), headers=key)
    again = client.post("/api/v1/jobs", json=spec_on(queue), headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["id"] == first.json["id"]
    # The same race inside the flush: the key was taken after the API looked it up.
    spec, alice = parse_spec(spec_on(queue)), accounts["alice"].user_id
    [replay] = jobs.submit_jobs(db, [NewJob(spec, alice, idempotency_key="once", max_queued=1)])
    assert isinstance(replay, IdempotentReplay) and replay.job.id == first.json["id"]


def test_a_batch_admits_each_owner_up_to_the_limit(db, accounts, queue):
    """One flush: alice's submissions past her limit are refused, in order; bob (no limit)
    is inserted as before, and the limit read under the lock is the one that counts."""
    limit(db, "alice", max_queued=3)
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    spec = parse_spec(spec_on(queue))
    jobs.create_jobs(db, [NewJob(spec, alice)])
    batch = [
        NewJob(spec, alice, max_queued=3),
        NewJob(spec, bob),
        NewJob(spec, alice, max_queued=3),
        NewJob(spec, alice, max_queued=99),  # read before an admin lowered it: 3 counts
        NewJob(spec, bob),
    ]
    results = jobs.submit_jobs(db, batch)
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["int", "int", "int", "QuotaExceeded", "int"]
    assert (results[3].queued, results[3].limit) == (3, 3)
    assert isinstance(results[3], QuotaExceeded)
    assert (queued(db, alice), queued(db, bob)) == (3, 2)


# ---------------------------------------------------------------- under concurrency


def serve(app) -> tuple[str, make_server]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def burst(urls: list[str], token: str, queue: str, count: int) -> list[requests.Response]:
    """`count` submissions at once, spread over `urls`, each on its own connection."""
    start = threading.Barrier(count)

    def post(n: int) -> requests.Response:
        start.wait(30)
        return requests.post(
            f"{urls[n % len(urls)]}/api/v1/jobs",
            json=tiny_spec(name=f"burst-{n}", resources={"queue": queue}),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, range(count)))


def assert_exactly_ten(answers: list[requests.Response], db, owner_id: int) -> None:
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 10 + [429] * 40, codes
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "quota_exceeded"
            assert answer.json()["error"]["fields"][0]["message"] == "10 queued of 10"
    assert queued(db, owner_id) == 10 and row_count(db, Job) == 10


def test_fifty_at_once_leave_exactly_max_queued_across_api_processes(settings, db, accounts, queue):
    """Two API instances (each its own pool and group commit, as two processes have) on one
    database: 50 concurrent submissions by a user with max_queued=10 store exactly 10."""
    from api import create_app

    limit(db, "alice", max_queued=10)
    apps = [create_app(settings, {"TESTING": True}) for _ in range(2)]
    served = [serve(app) for app in apps]
    try:
        answers = burst([url for url, _ in served], accounts["alice"].token, queue, 50)
    finally:
        for (_, server), app in zip(served, apps, strict=True):
            server.shutdown()
            app.extensions["seqtrain"].db.dispose()
            app.extensions["seqtrain"].limiter.redis.close()
    assert_exactly_ten(answers, db, accounts["alice"].user_id)


def test_fifty_at_once_under_gunicorn_workers(base_settings, db, accounts, queue):
    """The same burst against `seqtrain api` itself: gunicorn, two worker processes."""
    from cli.services import api_command, free_port, stop, wait_for_port

    limit(db, "alice", max_queued=10)
    port = free_port()
    env = dict(worker_env(base_settings), SEQTRAIN_SECRET_KEY=base_settings.secret_key)
    proc = subprocess.Popen(
        api_command("127.0.0.1", port, 2),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, "api")
        answers = burst([f"http://127.0.0.1:{port}"], accounts["alice"].token, queue, 50)
    finally:
        stop(proc)
    assert_exactly_ten(answers, db, accounts["alice"].user_id)
