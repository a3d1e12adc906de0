"""The status pages' API (api/board.py, logs.py, stream.py, workers.py, jobs.py's retry) and
pages: board, logs, events, the SSE stream, retry, workers; ownership on each; and the pages'
shells."""

import json
import re
import time

import pytest
import redis

from api.logs import LOG_CHUNK_BYTES
from shared import jobs
from shared.infra.models import Job
from shared.jobs import workers
from shared.protocol import log_key
from shared.spec import parse_spec
from tests.helpers import SMALL_TSV, row_count, tiny_spec, upload

NOBODY = {"queue": "nobody-listens"}


def make_job(db, owner, name="job", **sections):
    spec = tiny_spec(name=name, resources=NOBODY, **sections)
    return jobs.create_job(db, parse_spec(spec), owner.user_id).id


def run_epoch(db, job_id, attempt, step=10, epoch=1, loss=0.5, accuracy=0.8):
    rows = [
        {"step": step, "epoch": epoch, "split": "train", "name": "loss", "value": loss},
        {"step": step, "epoch": epoch, "split": "train", "name": "tokens_per_s", "value": 1234.0},
        {"step": step, "epoch": epoch, "split": "val", "name": "loss", "value": loss + 0.1},
        {"step": step, "epoch": epoch, "split": "val", "name": "accuracy", "value": accuracy},
    ]
    jobs.write_metrics(db, job_id, attempt, rows, epoch=epoch, step=step)


def write_log(store, job_id, attempt, data: bytes) -> None:
    """Append to an attempt's log archive in the store (replaced whole, as the worker does)."""
    key = log_key(job_id, attempt)
    before = store.get_bytes(key) if store.exists(key) else b""
    store.put_bytes(before + data, key)


def assert_field_error(response, status, path):
    assert response.status_code == status, response.json
    error = response.json["error"]
    assert error["message"] and path in {f["path"] for f in error["fields"]}


# ---------------------------------------------------------------- board


def test_board_filters_searches_sorts_pages_and_reports_progress(client, db, accounts):
    alice, bob = accounts["alice"], accounts["bob"]
    ids = [make_job(db, alice, name) for name in ("Alpha one", "beta", "gamma", "ALPHA two")]
    make_job(db, bob, "alpha of bob")
    running = ids[1]
    attempt = jobs.claim(db, running, "w", 60)
    run_epoch(db, running, attempt, step=10, epoch=1)  # 10 steps an epoch, 3 epochs planned

    board = client.get("/api/v1/jobs/board").json
    assert [j["id"] for j in board["jobs"]] == ids[::-1]  # newest first, alice's only
    assert board["total"] == 4 and board["pages"] == 1
    row = next(j for j in board["jobs"] if j["id"] == running)
    assert row["status"] == "running" and row["owner"] == "alice"
    assert row["progress"] == pytest.approx(1 / 3) and row["eta_seconds"] >= 0
    assert row["latest_loss"] == 0.5 and row["metric_name"] == "accuracy"
    assert row["metric_value"] == 0.8 and row["tokens_per_s"] == 1234.0
    queued = next(j for j in board["jobs"] if j["id"] == ids[0])
    assert queued["progress"] == 0.0 and queued["latest_loss"] is None

    found = client.get("/api/v1/jobs/board?q=alpha&sort=name").json
    assert [j["name"] for j in found["jobs"]] == ["ALPHA two", "Alpha one"]  # case-insensitive
    assert client.get("/api/v1/jobs/board?q=%25").json["total"] == 0  # LIKE wildcards are text
    assert [j["id"] for j in client.get("/api/v1/jobs/board?status=running").json["jobs"]] == [
        running
    ]
    first = client.get("/api/v1/jobs/board?sort=oldest&per_page=3").json
    second = client.get("/api/v1/jobs/board?sort=oldest&per_page=3&page=2").json
    assert first["pages"] == 2 and [j["id"] for j in first["jobs"] + second["jobs"]] == ids
    admin = client.get("/api/v1/jobs/board", headers=accounts["root"].headers).json
    assert admin["total"] == 5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=sleeping", "status"),
        ("sort=random", "sort"),
        ("page=0", "page"),
        ("per_page=1000", "per_page"),
        ("q=" + "x" * 201, "q"),
        ("colour=red", "colour"),
    ],
)
def test_board_bad_parameters_are_400_naming_them(client, query, field):
    assert_field_error(client.get("/api/v1/jobs/board?" + query), 400, field)


# ---------------------------------------------------------------- logs and events


def test_logs_follow_by_offset_in_bounded_chunks(client, db, accounts, store):
    # The API reads where the worker writes: both take the key from shared.protocol.log_key.
    job_id = make_job(db, accounts["alice"])
    empty = client.get(f"/api/v1/jobs/{job_id}/logs").json
    assert empty == {
        "attempt": 0,
        "attempts": [],
        "offset": 0,
        "next_offset": 0,
        "text": "",
        "complete": False,
    }
    attempt = jobs.claim(db, job_id, "w", 60)
    write_log(store, job_id, attempt, b"epoch 1/3 loss 0.5\n")
    chunk = client.get(f"/api/v1/jobs/{job_id}/logs").json
    assert chunk["attempt"] == 1 and chunk["attempts"] == [1]
    assert chunk["text"] == "epoch 1/3 loss 0.5\n" and not chunk["complete"]

    # A big write arrives in 64 KiB chunks; a chunk never splits a UTF-8 character.
    big = ("é" * (LOG_CHUNK_BYTES // 2 + 7) + "\n").encode()
    write_log(store, job_id, attempt, big)
    offset, text = chunk["next_offset"], ""
    for _ in range(10):
        part = client.get(f"/api/v1/jobs/{job_id}/logs?offset={offset}").json
        assert len(part["text"].encode()) <= LOG_CHUNK_BYTES and "\ufffd" not in part["text"]
        text, offset = text + part["text"], part["next_offset"]
        if not part["text"]:
            break
    assert text == big.decode() and not part["complete"]

    # The attempt ends: the log is complete once read to its end.
    jobs.finish(db, job_id, attempt, "succeeded", "training finished", "w")
    assert client.get(f"/api/v1/jobs/{job_id}/logs?offset=0").json["complete"] is False
    done = client.get(f"/api/v1/jobs/{job_id}/logs?offset={offset}").json
    assert done["complete"] is True and done["text"] == ""
    past = client.get(f"/api/v1/jobs/{job_id}/logs?offset=99999999").json
    assert past["next_offset"] == offset and past["complete"] is True


def test_logs_of_each_attempt(client, db, accounts, store):
    job_id = make_job(db, accounts["alice"])
    first = jobs.claim(db, job_id, "w", 60)
    write_log(store, job_id, first, b"first attempt\n")
    jobs.requeue(db, job_id, first, "worker shutting down", "w")
    requeued = client.get(f"/api/v1/jobs/{job_id}/logs").json
    assert requeued["attempt"] == 1 and requeued["complete"] is True
    second = jobs.claim(db, job_id, "w", 60)
    write_log(store, job_id, second, b"second attempt\n")
    latest = client.get(f"/api/v1/jobs/{job_id}/logs").json
    assert latest["attempt"] == 2 and latest["attempts"] == [1, 2]
    assert latest["text"] == "second attempt\n" and latest["complete"] is False
    older = client.get(f"/api/v1/jobs/{job_id}/logs?attempt=1").json
    assert older["text"] == "first attempt\n" and older["complete"] is True
    assert_field_error(client.get(f"/api/v1/jobs/{job_id}/logs?attempt=3"), 400, "attempt")
    assert_field_error(client.get(f"/api/v1/jobs/{job_id}/logs?offset=-1"), 400, "offset")


def test_events_timeline_and_after(client, db, accounts):
    job_id = make_job(db, accounts["alice"])
    attempt = jobs.claim(db, job_id, "w", 60)
    jobs.finish(db, job_id, attempt, "failed", "trainer exit code 1", "w")
    events = client.get(f"/api/v1/jobs/{job_id}/events").json["events"]
    assert [(e["from_status"], e["to_status"]) for e in events] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "failed"),
    ]
    assert events[2]["message"] == "trainer exit code 1" and events[1]["attempt"] == 1
    newer = client.get(f"/api/v1/jobs/{job_id}/events?after={events[0]['id']}").json["events"]
    assert [e["id"] for e in newer] == [e["id"] for e in events[1:]]


# ---------------------------------------------------------------- stream


class EventReader:
    """Reads server-sent events from a streamed test-client response, one at a time."""

    def __init__(self, response):
        self.chunks = iter(response.response)
        self.buffer = ""

    def next(self):
        while "\n\n" not in self.buffer:
            self.buffer += next(self.chunks).decode()
        block, self.buffer = self.buffer.split("\n\n", 1)
        fields = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        return {k: "\n".join(v) for k, v in fields.items()}

    def next_event(self):
        while True:
            block = self.next()
            if "event" in block:
                return block["event"], json.loads(block["data"])


def test_stream_relays_metrics_and_status_then_ends(app, client, db, accounts, settings):
    app.config["SEQTRAIN_STREAM_SECONDS"] = 30
    job_id = make_job(db, accounts["alice"])
    attempt = jobs.claim(db, job_id, "w", 60)
    response = client.get(f"/api/v1/jobs/{job_id}/stream", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    reader = EventReader(response)
    assert reader.next() == {"retry": "2000"}
    event, status = reader.next_event()
    assert event == "status" and status["status"] == "running" and status["attempt"] == 1

    # Subscribed before the first byte: what the trainer publishes now comes through.
    rows = [{"step": 5, "epoch": 0, "split": "train", "name": "loss", "value": 0.7}]
    redis.Redis.from_url(settings.redis_url).publish(
        f"seqtrain:job:{job_id}:metrics", json.dumps(rows)
    )
    assert reader.next_event() == ("metrics", rows)

    run_epoch(db, job_id, attempt, step=10, epoch=1)  # progress moves: a status event
    event, status = reader.next_event()
    assert event == "status" and status["step"] == 10 and status["progress"] == pytest.approx(1 / 3)
    jobs.finish(db, job_id, attempt, "succeeded", "training finished", "w")
    assert reader.next_event()[1]["status"] == "succeeded"
    assert reader.next_event() == ("end", {"status": "succeeded"})
    with pytest.raises(StopIteration):
        reader.next()
    response.close()


def test_stream_lifetime_heartbeat_and_idle_jobs(app, client, db, accounts, monkeypatch):
    import api.stream

    monkeypatch.setattr(api.stream, "HEARTBEAT_SECONDS", 0.2)
    app.config["SEQTRAIN_STREAM_SECONDS"] = 1
    job_id = make_job(db, accounts["alice"])
    jobs.claim(db, job_id, "w", 60)
    started = time.monotonic()
    body = client.get(f"/api/v1/jobs/{job_id}/stream").get_data(as_text=True)
    assert 0.9 < time.monotonic() - started < 10  # bounded; the client reconnects
    assert ": keep-alive" in body and "event: end" not in body

    queued = make_job(db, accounts["alice"])  # nothing to stream yet: status, then close
    body = client.get(f"/api/v1/jobs/{queued}/stream").get_data(as_text=True)
    assert body.count("event: status") == 1 and "event: end" not in body
    jobs.request_cancel(db, queued, "alice")
    body = client.get(f"/api/v1/jobs/{queued}/stream").get_data(as_text=True)
    assert '"status":"cancelled"' in body and "event: end" in body


# ---------------------------------------------------------------- retry


def test_retry_creates_a_new_queued_job_for_the_caller(client, db, accounts, settings):
    queue = f"{settings.default_queue}-retry"
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(queue)
    uploaded = upload(client, SMALL_TSV, format="tsv", text_column="sentence", label_column="label")
    dataset_id = uploaded.json["id"]
    spec = tiny_spec(
        name="to retry", resources={"queue": queue}, data={"dataset": f"dataset:{dataset_id}"}
    )
    job_id = client.post("/api/v1/jobs", json=spec).json["id"]
    broker.delete(queue)
    assert client.post(f"/api/v1/jobs/{job_id}/retry").status_code == 409  # still queued
    jobs.request_cancel(db, job_id, "alice")

    # root (an admin) retries alice's job: the new job is root's, on the same dataset version.
    response = client.post(f"/api/v1/jobs/{job_id}/retry", headers=accounts["root"].headers)
    assert response.status_code == 201, response.json
    created = response.json
    assert created["status"] == "queued" and created["enqueued"] is True
    assert response.headers["Location"] == created["url"] == f"/api/v1/jobs/{created['id']}"
    old, new = jobs.get_job(db, job_id), jobs.get_job(db, created["id"])
    assert new.id != old.id and new.owner_id == accounts["root"].user_id
    assert new.spec == old.spec and new.status == "queued"
    assert {r: d.id for r, d in jobs.dataset_links(db, new.id).items()} == {"train": dataset_id}
    assert f"retry of job {job_id}" in [e.message for e in jobs.job_events(db, new.id)]
    assert broker.llen(queue) == 1
    broker.delete(queue)

    bob = client.post(f"/api/v1/jobs/{job_id}/retry", headers=accounts["bob"].headers)
    assert bob.status_code == 403


def test_retry_is_refused_like_a_submit_when_no_worker_can_hold_the_job(client, db, accounts):
    queue = "retry-placement"
    spec = parse_spec(tiny_spec(resources={"queue": queue, "devices": 4}))
    job_id = jobs.create_job(db, spec, accounts["alice"].user_id).id
    jobs.request_cancel(db, job_id, "alice")  # submitted while no worker had registered
    workers.register(
        db,
        name="two-devices",
        hostname="host",
        pid=1,
        queues=[queue],
        device_kind="cpu",
        device_count=2,
        devices=[{"index": i, "name": "cpu", "memory_bytes": 8 << 30} for i in range(2)],
    )
    refused = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert refused.status_code == 422
    field = refused.json["error"]["fields"][0]
    assert field["path"] == "resources.devices" and "at most 2" in field["message"]
    assert row_count(db, Job) == 1


# ---------------------------------------------------------------- workers


def test_workers_with_devices_queues_and_only_visible_jobs(client, db, accounts, settings):
    bob_job = make_job(db, accounts["bob"], "bob's secret")
    alice_job = make_job(db, accounts["alice"], "alice's")
    for name, job_id in (("w-bob", bob_job), ("w-alice", alice_job)):
        workers.register(
            db,
            name=name,
            hostname="gpu-host",
            pid=42,
            queues=[settings.default_queue, "gpu"],
            device_kind="cuda",
            device_count=2,
            devices=[{"name": "H100", "memory_bytes": 80 * 2**30}] * 2,
        )
        workers.set_current_job(db, name, job_id)
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete("gpu")
    broker.rpush("gpu", b"{}", b"{}")

    body = client.get("/api/v1/workers").json
    by_name = {w["name"]: w for w in body["workers"]}
    assert set(by_name) >= {"w-bob", "w-alice"}
    assert by_name["w-alice"]["current_job_id"] == alice_job and by_name["w-alice"]["busy"]
    assert by_name["w-bob"]["current_job_id"] is None and by_name["w-bob"]["busy"]
    assert (
        by_name["w-bob"]["devices"][0]["name"] == "H100" and by_name["w-bob"]["device_count"] == 2
    )
    assert 0 <= by_name["w-bob"]["heartbeat_age_seconds"] < 60
    assert body["queues"]["gpu"] == 2 and settings.default_queue in body["queues"]
    admin = client.get("/api/v1/workers", headers=accounts["root"].headers).json
    assert {w["name"]: w for w in admin["workers"]}["w-bob"]["current_job_id"] == bob_job
    broker.delete("gpu")


# ---------------------------------------------------------------- ownership and CSRF


ROUTES = [
    ("GET", "/api/v1/jobs/{job}/logs"),
    ("GET", "/api/v1/jobs/{job}/events"),
    ("GET", "/api/v1/jobs/{job}/stream"),
    ("POST", "/api/v1/jobs/{job}/retry"),
]


@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_other_users_jobs_are_403_and_anonymous_401(anon, db, accounts, method, template):
    job_id = make_job(db, accounts["alice"], "alice-secret-job")
    path = template.format(job=job_id)
    other = anon.open(path, method=method, headers=accounts["bob"].headers)
    assert other.status_code == 403 and b"alice-secret-job" not in other.data
    assert anon.open(path, method=method).status_code == 401
    assert anon.get("/api/v1/workers").status_code == 401
    assert anon.get("/api/v1/jobs/board").status_code == 401
    missing = anon.open(template.format(job=999999), method=method, headers=accounts["bob"].headers)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"


def sign_in(anon, account):
    page = anon.get("/login").data
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    assert anon.post("/login", data={"token": account.token, "csrf_token": csrf}).status_code == 302
    home = anon.get("/").data
    return re.search(rb'name="csrf-token" content="([^"]+)"', home).group(1).decode()


def test_pages_need_a_session_and_writes_need_its_csrf_token(anon, db, accounts):
    for path in ("/", "/workers", "/submit", "/jobs/1"):
        response = anon.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/login"
    job_id = make_job(db, accounts["alice"])
    jobs.request_cancel(db, job_id, "alice")
    csrf = sign_in(anon, accounts["alice"])
    refused = anon.post(f"/api/v1/jobs/{job_id}/retry")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_failed"
    assert (
        anon.post(f"/api/v1/jobs/{job_id}/retry", headers={"X-CSRF-Token": csrf}).status_code == 201
    )


def test_pages_render_escaped_and_hide_other_users_jobs(anon, db, accounts):
    name = "<img src=x onerror=alert(1)>"
    mine = make_job(db, accounts["alice"], name)
    theirs = make_job(db, accounts["bob"], "bob-private-job")
    sign_in(anon, accounts["alice"])
    page = anon.get(f"/jobs/{mine}")
    assert page.status_code == 200 and b"<img src=x" not in page.data
    assert b"&lt;img src=x onerror=alert(1)&gt;" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert b"<script>" not in page.data  # scripts are external files only
    hidden = anon.get(f"/jobs/{theirs}")
    assert hidden.status_code == 404 and b"bob-private-job" not in hidden.data
    clone = anon.get(f"/submit?from={theirs}")
    assert clone.status_code == 200 and b"bob-private-job" not in clone.data
    copy = anon.get(f"/submit?from={mine}")
    assert b"name: &lt;img src=x onerror=alert(1)&gt;" in copy.data
    for path in ("/", "/workers", "/submit"):
        assert anon.get(path).status_code == 200
    static = anon.get("/static/vendor/uplot-1.6.32.min.js")
    assert static.status_code == 200 and b"uPlot" in static.data
    static.close()
