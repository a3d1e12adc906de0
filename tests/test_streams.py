"""Live streams cannot starve the API: the per-user cap on open streams (counted in Redis
across processes, with expiry), and the API under gunicorn's gevent workers answering
while more streams are open than the threads of the old gthread set-up."""

import contextlib
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from api.stream import StreamSlots, slots_key
from cli import services
from shared import jobs
from shared.spec import parse_spec
from tests.conftest import ROOT, wait_until, worker_env
from tests.helpers import tiny_spec

NOBODY = {"queue": "nobody-listens"}


def running_job(db, owner, name="streamed"):
    job = jobs.create_job(db, parse_spec(tiny_spec(name=name, resources=NOBODY)), owner.user_id)
    assert jobs.claim(db, job.id, "w", 600)
    return job.id


@pytest.fixture
def slots(settings):
    counter = StreamSlots(settings.redis_url, seconds=30)
    for user_id in (1, 2):
        counter.redis.delete(slots_key(user_id))
    yield counter
    counter.redis.close()


# ---------------------------------------------------------------- the counter


def test_slots_cap_per_user_and_free_on_release(slots):
    held = [slots.acquire(1, 3) for _ in range(3)]
    assert all(held) and len(set(held)) == 3
    assert slots.acquire(1, 3) is None  # the cap
    assert slots.acquire(2, 3) is not None  # another user's count is their own
    assert slots.count(1) == 3
    slots.release(1, held[0])
    assert slots.count(1) == 2
    assert slots.acquire(1, 3) is not None
    assert slots.acquire(1, 0) is None  # a cap of 0: no streams at all


def test_a_dead_process_slots_expire(settings, slots):
    """A process that holds slots and dies (SIGKILL: nothing released) frees them once they
    are not renewed for the slot lifetime; a renewed slot stays."""
    code = (
        "import sys, time\n"
        "from api.stream import StreamSlots\n"
        f"s = StreamSlots({settings.redis_url!r}, seconds=1.5)\n"
        "print(all(s.acquire(1, 2) for _ in range(2)), flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "True"
        assert slots.acquire(1, 2) is None
    finally:
        child.kill()
        child.wait()
    short = StreamSlots(settings.redis_url, seconds=1.5)
    kept = short.acquire(2, 1)
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        short.renew(2, kept)
        time.sleep(0.3)
    assert short.acquire(2, 1) is None  # renewed: still held
    mine = wait_until(lambda: slots.acquire(1, 2), timeout=5, message="expired slots freed")
    assert mine and slots.acquire(1, 2) is not None and slots.acquire(1, 2) is None
    short.redis.close()


# ---------------------------------------------------------------- the route


def test_the_cap_refuses_one_stream_more_with_retry_after(app, client, db, accounts, settings):
    app.config.update(SEQTRAIN_MAX_STREAMS_PER_USER=2, SEQTRAIN_STREAM_SECONDS=30)
    redis.Redis.from_url(settings.redis_url).delete(slots_key(accounts["alice"].user_id))
    job_id = running_job(db, accounts["alice"])
    url = f"/api/v1/jobs/{job_id}/stream"
    open_streams = [client.get(url, buffered=False) for _ in range(2)]
    assert [r.status_code for r in open_streams] == [200, 200]
    refused = client.get(url)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"].isdigit() and int(refused.headers["Retry-After"]) > 0
    error = refused.json["error"]
    assert error["code"] == "too_many_streams" and "2 live streams" in error["message"]

    open_streams[0].close()  # a closed stream frees its slot at once
    again = client.get(url, buffered=False)
    assert again.status_code == 200
    again.close()
    open_streams[1].close()
    # The cap is per user: bob is not refused for alice's streams.
    bob_job = running_job(db, accounts["bob"], "bob's")
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {accounts['bob'].token}"
    held = [client.get(url, buffered=False) for _ in range(2)]
    answer = bob.get(f"/api/v1/jobs/{bob_job}/stream", buffered=False)
    assert answer.status_code == 200
    for response in (*held, answer):
        response.close()


def test_a_refused_stream_is_refused_before_any_slot_and_ended_streams_free_theirs(
    app, client, db, accounts, settings
):
    app.config.update(SEQTRAIN_MAX_STREAMS_PER_USER=1, SEQTRAIN_STREAM_SECONDS=0.3)
    counter = redis.Redis.from_url(settings.redis_url)
    key = slots_key(accounts["alice"].user_id)
    counter.delete(key)
    job_id = running_job(db, accounts["alice"])
    assert client.get("/api/v1/jobs/999999/stream").status_code == 404  # no slot taken
    assert counter.zcard(key) == 0
    for _ in range(3):  # each stream ends by its lifetime; closed, it frees its slot
        response = client.get(f"/api/v1/jobs/{job_id}/stream")
        assert "event: status" in response.get_data(as_text=True)
        response.close()  # what a WSGI server does once the body is sent
        assert counter.zcard(key) == 0


def test_a_client_that_goes_away_frees_its_slot(app, db, accounts, settings):
    """Over a real socket: the stream finds the client gone at a heartbeat and ends."""
    from werkzeug.serving import make_server

    app.config.update(
        SEQTRAIN_MAX_STREAMS_PER_USER=1,
        SEQTRAIN_STREAM_SECONDS=30,
        SEQTRAIN_STREAM_HEARTBEAT_SECONDS=0.2,
    )
    counter = redis.Redis.from_url(settings.redis_url)
    key = slots_key(accounts["alice"].user_id)
    counter.delete(key)
    job_id = running_job(db, accounts["alice"])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sock = open_stream(server.server_port, accounts["alice"].token, job_id)
        assert counter.zcard(key) == 1
        sock.close()
        wait_until(lambda: counter.zcard(key) == 0, timeout=5, message="slot freed")
    finally:
        server.shutdown()
        thread.join()


# ---------------------------------------------------------------- a real server


def open_stream(port, token, job_id, timeout=10.0):
    """A raw HTTP/1.1 stream request; returns the socket once the 200 and the first event
    arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(
        f"GET /api/v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"event: status" not in head:
        chunk = sock.recv(65536)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


@contextlib.contextmanager
def gunicorn_api(settings, tmp_path, **env_vars):
    """The API as `seqtrain api` serves it (2 gevent processes), on this test's database."""
    import requests

    port = services.free_port()
    env = dict(
        worker_env(settings), SEQTRAIN_SECRET_KEY="x", SEQTRAIN_VAR_DIR=str(tmp_path), **env_vars
    )
    api = subprocess.Popen(
        services.api_command("127.0.0.1", port, 2),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        services.wait_for_port(port, api, "api")
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=30).raise_for_status()
        yield port
    finally:
        services.stop(api)


def test_more_open_streams_than_threads_do_not_freeze_the_api(settings, db, accounts, tmp_path):
    """With 40 streams open, more than the 2 x 16 threads of the gthread set-up, /healthz
    and a submission still answer within 1 s; the cap counts the streams of both processes
    together."""
    import requests

    alice = accounts["alice"]
    redis.Redis.from_url(settings.redis_url).delete(slots_key(alice.user_id))
    job_ids = [running_job(db, alice, f"live-{n}") for n in range(4)]
    streams = []
    with gunicorn_api(settings, tmp_path, SEQTRAIN_MAX_STREAMS_PER_USER="40") as port:
        url = f"http://127.0.0.1:{port}"
        try:
            streams = [open_stream(port, alice.token, job_ids[n % 4]) for n in range(40)]
            counter = StreamSlots(settings.redis_url)
            assert counter.count(alice.user_id) == 40
            counter.redis.close()
            refused = requests.get(
                f"{url}/api/v1/jobs/{job_ids[0]}/stream", headers=alice.headers, timeout=5
            )
            assert refused.status_code == 429 and refused.headers["Retry-After"]
            for _ in range(5):
                health, took = timed(lambda: requests.get(url + "/healthz", timeout=1))
                assert health.status_code == 200 and took < 1.0, took
                spec = tiny_spec(name="during-streams", resources=NOBODY)
                created, took = timed(
                    lambda spec=spec: requests.post(
                        url + "/api/v1/jobs", json=spec, headers=alice.headers, timeout=1
                    )
                )
                assert created.status_code == 201 and took < 1.0, (created.text, took)
            # The streams are alive: each still gets its heartbeat.
            for sock in streams[:3]:
                sock.settimeout(10)
                assert b": keep-alive" in read_until(sock, b": keep-alive")
        finally:
            for sock in streams:
                sock.close()


@pytest.mark.e2e
def test_predictions_under_gevent_workers(client, settings, accounts, worker, tmp_path):
    """torch runs on gevent's native threads: concurrent predictions on one model all
    answer, and /healthz answers meanwhile."""
    import requests

    from tests.test_e2e import TERMINAL, submit, wait_for_status

    job_id = submit(client, settings, training={"epochs": 2, "lr": 0.03})
    assert wait_for_status(client, job_id, TERMINAL)["status"] == "succeeded"
    with gunicorn_api(settings, tmp_path) as port:
        url = f"http://127.0.0.1:{port}"
        headers = accounts["alice"].headers
        body = {"texts": ["the film was wonderful .", "dull and tedious ."] * 20}

        def predict(_):
            return requests.post(
                f"{url}/api/v1/jobs/{job_id}/predict", json=body, headers=headers, timeout=60
            )

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(predict, range(16)))
            health = requests.get(url + "/healthz", timeout=5)
        assert health.status_code == 200
        assert [a.status_code for a in answers] == [200] * 16, answers[0].text
        assert all(len(a.json()["predictions"]) == 40 for a in answers)


def read_until(sock, marker):
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_stream_status_is_json_of_the_job(app, client, db, accounts):
    job_id = running_job(db, accounts["alice"])
    app.config.update(SEQTRAIN_STREAM_SECONDS=0.2)
    body = client.get(f"/api/v1/jobs/{job_id}/stream").get_data(as_text=True)
    status = json.loads(body.split("event: status\ndata: ", 1)[1].split("\n", 1)[0])
    assert status["id"] == job_id and status["status"] == "running"
