"""Hostile and careless clients: bad input is a 4xx in the one error shape, nothing is stored
that can only fail, and `seqtrain up` takes its children with it.

Most requests go through the Flask app (the same WSGI app gunicorn serves) on SQLite and
PostgreSQL with a real Redis; what depends on the HTTP server (chunked bodies, gunicorn's
own refusals) goes to a real gunicorn process on a free port.

Where each way a hostile or careless client used to win is replayed:

 1 open streams starve the API        tests/test_streams.py::test_more_open_streams_than_threads_do_not_freeze_the_api,
                                       ::test_the_cap_refuses_one_stream_more_with_retry_after
 2 a session outlives its token       tests/test_sessions.py::test_a_session_ends_when_its_token_is_revoked_by_another_process
 3 logout leaves the cookie valid     tests/test_sessions.py::test_logout_ends_the_session_for_a_copied_cookie_too
 4 the limiter locks out valid users  tests/test_sessions.py::test_others_failures_never_refuse_a_valid_token
 5 deeply nested JSON bodies          test_deeply_nested_json_body_is_a_400, test_random_depth_and_size_never_5xx
 6 deeply nested jsonl lines          test_deep_jsonl_line_is_a_400_naming_the_line
 7 dataset:<huge> and dataset:²       test_dataset_reference_takes_ascii_digits_in_range
 8 a dataset deleted under a submit   test_dataset_deleted_before_the_insert_fails_only_its_submission,
                                       test_concurrent_delete_and_submit_never_500
 9 stored, then failed in the worker  test_retry_after_its_dataset_was_deleted_is_a_422,
                                       test_classification_on_one_label_is_a_422_at_submit
10 upload filenames                   test_upload_filename_obeys_the_name_rules
11 chunked bodies over the limit      test_chunked_body_over_the_limit_is_a_413
12 concurrent cancels                 test_concurrent_cancels_write_one_event
13 /login's 429 without Retry-After   test_login_refusal_sends_retry_after (and tests/test_sessions.py)
14 messages, ids, 414/431, retry keys test_each_request_model_names_itself_in_errors,
                                       test_non_finite_numbers_have_their_own_message,
                                       test_ids_outside_the_range_say_the_id_is_invalid,
                                       test_http_server_refusals, test_retry_honours_idempotency_key
15 `seqtrain up` leaves its Redis     test_seqtrain_up_children_die_with_it_on_sigkill
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import jobs
from shared.infra.models import Dataset
from shared.spec import parse_spec
from tests.conftest import ROOT, authed_client, wait_until, worker_env
from tests.helpers import SMALL_TSV, row_count, tiny_spec, upload

DEEP = "[" * 5000 + "]" * 5000
PARKED = {"queue": "nobody-listens"}  # no worker takes these jobs


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is `status` in the one error shape; returns its `error`."""
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    error = response.json["error"]
    assert set(error) == {"code", "message", "fields"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def paths(error: dict) -> list[str]:
    return [field["path"] for field in error["fields"]]


def post_json(client, url: str, text: str):
    return client.post(url, data=text, content_type="application/json")


def tsv_dataset(client, extra: str = "", **options) -> int:
    """A classification upload; `extra` makes its bytes (and so the dataset) distinct."""
    data = SMALL_TSV + (f"{extra} film\tpos\n".encode() if extra else b"")
    response = upload(
        client, data, format="tsv", text_column="sentence", label_column="label", **options
    )
    assert response.status_code == 201, response.json
    return int(response.json["id"])


def parked_spec(dataset: str, **sections) -> dict:
    return tiny_spec(data={"dataset": dataset}, resources=PARKED, **sections)


# ---------------------------------------------------------------- 5, 6: deep JSON


@pytest.mark.parametrize(
    "route", ["/api/v1/jobs", "/api/v1/jobs/1/predict", "/api/v1/jobs/1/generate"]
)
def test_deeply_nested_json_body_is_a_400(client, route):
    body = '{"name":"t","model":' + DEEP + "}"
    error = assert_error(post_json(client, route, body), 400, "bad_request")
    assert "nested deeper than 64 levels" in error["message"]
    assert error["fields"] == [
        {"path": "", "message": error["fields"][0]["message"], "type": "json_depth"}
    ]


def test_nesting_inside_strings_is_not_counted(client):
    spec = parked_spec("builtin:sentiment", name="[" * 150 + "{" * 50)
    assert client.post("/api/v1/jobs", json=spec).status_code == 201


def test_deep_jsonl_line_is_a_400_naming_the_line(client, db):
    data = b'{"text": "fine", "label": "a"}\n{"text": "deep", "label": ' + DEEP.encode() + b"}\n"
    response = upload(client, data, filename="deep.jsonl", format="jsonl", text_column="text")
    error = assert_error(response, 400, "invalid_dataset")
    assert error["message"].startswith("line 2:") and "nested deeper than 64" in error["message"]
    assert row_count(db, Dataset) == 0


# ---------------------------------------------------------------- 7: dataset references


@pytest.mark.parametrize(
    "reference",
    ["dataset:99999999999999999999", "dataset:²", "dataset:２", "dataset:0", "dataset:x"],
)
def test_dataset_reference_takes_ascii_digits_in_range(client, reference):
    response = client.post("/api/v1/jobs", json=parked_spec(reference))
    error = assert_error(response, 422, "validation_error")
    assert paths(error) == ["data.dataset"]
    assert "invalid dataset reference" in error["fields"][0]["message"]


# ---------------------------------------------------------------- 8: delete under a submit


def test_dataset_deleted_before_the_insert_fails_only_its_submission(client, db, accounts):
    kept, doomed = tsv_dataset(client, "kept"), tsv_dataset(client, "doomed")
    owner = accounts["alice"].user_id
    assert client.delete(f"/api/v1/datasets/{doomed}").status_code == 204
    batch = [
        jobs.NewJob(parse_spec(parked_spec(f"dataset:{n}")), owner, datasets={"train": n})
        for n in (kept, doomed, kept)
    ]
    first, gone, last = jobs.submit_jobs(db, batch)
    assert isinstance(first, int) and isinstance(last, int)
    assert isinstance(gone, jobs.DatasetGone) and gone.datasets == {"train": doomed}
    assert {d.id for d in jobs.dataset_links(db, first).values()} == {kept}


def test_concurrent_delete_and_submit_never_500(app, client, accounts):
    outcomes = []
    for round_ in range(8):
        dataset = tsv_dataset(client, f"race {round_}")
        start = threading.Barrier(2)
        answers: dict[str, object] = {}

        def delete(dataset=dataset, start=start, answers=answers):
            start.wait()
            answers["delete"] = authed_client(app, accounts["alice"]).delete(
                f"/api/v1/datasets/{dataset}"
            )

        def submit(dataset=dataset, start=start, answers=answers):
            start.wait()
            answers["submit"] = authed_client(app, accounts["alice"]).post(
                "/api/v1/jobs", json=parked_spec(f"dataset:{dataset}")
            )

        threads = [threading.Thread(target=delete), threading.Thread(target=submit)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deleted, submitted = answers["delete"], answers["submit"]
        assert deleted.status_code in (204, 409), deleted.json
        assert submitted.status_code in (201, 422), submitted.json
        if submitted.status_code == 422:
            assert paths(submitted.json["error"]) == ["data.dataset"]
        # Never both: a stored job whose dataset is gone could only fail in the worker.
        assert (deleted.status_code, submitted.status_code) != (204, 201)
        outcomes.append((deleted.status_code, submitted.status_code))
    assert all(code < 500 for pair in outcomes for code in pair)


# ---------------------------------------------------------------- 9: stored, then failed


def finished_job(client, dataset: int) -> int:
    response = client.post("/api/v1/jobs", json=parked_spec(f"dataset:{dataset}"))
    assert response.status_code == 201
    job_id = int(response.json["id"])
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    return job_id


def test_retry_after_its_dataset_was_deleted_is_a_422(client, db):
    dataset = tsv_dataset(client)
    job_id = finished_job(client, dataset)
    assert client.delete(f"/api/v1/datasets/{dataset}").status_code == 204
    before = len(jobs.list_jobs(db)[0])
    error = assert_error(client.post(f"/api/v1/jobs/{job_id}/retry"), 422, "validation_error")
    assert paths(error) == ["data.dataset"] and "was deleted" in error["fields"][0]["message"]
    assert len(jobs.list_jobs(db)[0]) == before  # nothing stored


def test_retry_honours_idempotency_key(client):
    job_id = finished_job(client, tsv_dataset(client))
    key = {"Idempotency-Key": "retry-once-1"}
    first = client.post(f"/api/v1/jobs/{job_id}/retry", headers=key)
    again = client.post(f"/api/v1/jobs/{job_id}/retry", headers=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json["id"] == first.json["id"] and again.headers["Idempotent-Replayed"] == "true"


def test_classification_on_one_label_is_a_422_at_submit(client):
    data = b"sentence,label\na,pos\nc,pos\n"
    response = upload(
        client, data, filename="one.csv", format="csv", text_column="sentence", label_column="label"
    )
    assert response.status_code == 201  # a one-label file is fine to hold, e.g. as a test set
    reference = f"dataset:{response.json['id']}"
    error = assert_error(client.post("/api/v1/jobs", json=parked_spec(reference)), 422)
    assert paths(error) == ["data.dataset"]
    assert "1 distinct label ('pos')" in error["fields"][0]["message"]
    spec = parked_spec("builtin:sentiment")
    spec["data"]["test_dataset"] = reference
    assert client.post("/api/v1/jobs", json=spec).status_code == 201


# ---------------------------------------------------------------- 10: upload file names


@pytest.mark.parametrize("filename", ["A" * 5004, "a\x00b.tsv", "esc\x1b[31m.tsv", "dataset:1"])
def test_upload_filename_obeys_the_name_rules(client, db, filename):
    response = upload(
        client, SMALL_TSV, filename, format="tsv", text_column="sentence", label_column="label"
    )
    error = assert_error(response, 422, "validation_error")
    assert error["message"] == "invalid dataset options: name" and paths(error) == ["name"]
    assert row_count(db, Dataset) == 0
    named = upload(
        client,
        SMALL_TSV,
        filename,
        format="tsv",
        text_column="sentence",
        label_column="label",
        name="given",
    )
    assert named.status_code == 201 and named.json["name"] == "given"


def test_upload_columns_refuse_control_characters(client):
    response = upload(
        client, SMALL_TSV, format="tsv", text_column="sen\x00tence", label_column="label"
    )
    error = assert_error(response, 422, "validation_error")
    assert paths(error) == ["text_column"]
    assert error["fields"][0]["message"] == "must not contain control characters"


# ---------------------------------------------------------------- 12: concurrent cancels


def concurrent_cancels(app, account, job_id: int, count: int) -> list[int]:
    """`count` POST /cancel of one job, released together; their status codes."""
    start, answers = threading.Barrier(count), []

    def cancel() -> None:
        client = authed_client(app, account)
        start.wait()
        answers.append(client.post(f"/api/v1/jobs/{job_id}/cancel").status_code)

    threads = [threading.Thread(target=cancel) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_cancels_write_one_event(app, db, accounts):
    job = jobs.create_job(
        db, parse_spec(parked_spec("builtin:sentiment")), accounts["alice"].user_id
    )
    assert jobs.claim(db, job.id, "hostile-test", 60) == 1
    answers = concurrent_cancels(app, accounts["alice"], job.id, 20)
    assert answers == [202] * 20
    messages = [e.message for e in jobs.job_detail(db, job.id)[3]]
    assert messages.count("cancel requested") == 1
    assert jobs.get_job(db, job.id).cancel_requested


def test_concurrent_cancels_of_a_queued_job_write_one_event(app, db, accounts):
    job = jobs.create_job(
        db, parse_spec(parked_spec("builtin:sentiment")), accounts["alice"].user_id
    )
    answers = concurrent_cancels(app, accounts["alice"], job.id, 10)
    assert set(answers) <= {202, 409} and 202 in answers
    events = jobs.job_detail(db, job.id)[3]
    assert [e.message for e in events].count("cancelled by user") == 1
    assert "cancel requested" not in [e.message for e in events]


# ---------------------------------------------------------------- 13: sign-in limiter


def test_login_refusal_sends_retry_after(settings, accounts):
    import re
    from dataclasses import replace

    from api import create_app

    app = create_app(replace(settings, auth_failure_limit=2), {"TESTING": True})
    client = app.test_client()
    env = {"REMOTE_ADDR": "10.77.0.13"}
    page = client.get("/login", environ_base=env).data
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    statuses = []
    for _ in range(4):
        response = client.post(
            "/login", data={"token": "st_wrong", "csrf_token": csrf}, environ_base=env
        )
        statuses.append(response.status_code)
    assert statuses[-1] == 429 and int(response.headers["Retry-After"]) > 0
    app.extensions["seqtrain"].db.dispose()


# ---------------------------------------------------------------- 14: messages


def test_each_request_model_names_itself_in_errors(client):
    bad_options = upload(client, SMALL_TSV, format="tsv")  # no text_column
    assert assert_error(bad_options, 422)["message"].startswith("invalid dataset options")
    job = client.post("/api/v1/jobs", json=parked_spec("builtin:sentiment")).json["id"]
    predict = client.post(f"/api/v1/jobs/{job}/predict", json={"texts": []})
    assert assert_error(predict, 422)["message"] == "invalid prediction request: texts"
    generate = client.post(f"/api/v1/jobs/{job}/generate", json={"length": 0})
    assert assert_error(generate, 422)["message"] == "invalid generation request: length"
    spec = client.post("/api/v1/jobs", json={"name": ""})
    assert assert_error(spec, 422)["message"] == "invalid job spec: name"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_have_their_own_message(client, number):
    body = '{"name": "t", "training": {"lr": ' + number + "}}"
    error = assert_error(post_json(client, "/api/v1/jobs", body), 422, "validation_error")
    assert error["fields"] == [
        {
            "path": "training.lr",
            "message": f"must be a finite number, not {float(number)}",
            "type": "finite_number",
        }
    ]


@pytest.mark.parametrize(
    "job_id", ["99999999999999999999", "9223372036854775808", "0", "２", "1" * 500]
)
@pytest.mark.parametrize("suffix", ["", "/cancel", "/logs"])
def test_ids_outside_the_range_say_the_id_is_invalid(client, job_id, suffix):
    method = client.post if suffix == "/cancel" else client.get
    error = assert_error(method(f"/api/v1/jobs/{job_id}{suffix}"), 404, "not_found")
    assert "invalid id" in error["message"] and "job 0" not in error["message"]


def test_largest_id_is_a_plain_not_found(client):
    error = assert_error(client.get(f"/api/v1/jobs/{2**63 - 1}"), 404, "not_found")
    assert error["message"] == f"job {2**63 - 1} not found"


def test_submit_page_ignores_a_non_ascii_source_id(anon, accounts):
    import re

    page = anon.get("/login").data
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    signed_in = anon.post("/login", data={"token": accounts["alice"].token, "csrf_token": csrf})
    assert signed_in.status_code == 302
    for source in ("²", "２", "99999999999999999999"):
        assert anon.get(f"/submit?from={source}").status_code == 200


# ---------------------------------------------------------------- the HTTP server


@pytest.fixture(scope="module")
def gunicorn_url(base_settings, tmp_path_factory) -> Iterator[str]:
    """The API under gunicorn, as `seqtrain api` serves it."""
    from cli.services import api_command, free_port, stop, wait_for_port

    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "api.log"
    env = dict(worker_env(base_settings), SEQTRAIN_SECRET_KEY=base_settings.secret_key)
    with log.open("w") as out:
        proc = subprocess.Popen(
            api_command("127.0.0.1", port, 1),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc, "api")
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def raw_request(address: str, method: str, path: str, headers=None, body=None, chunked=False):
    """(status, headers, body bytes) of one request over a fresh connection."""
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def chunks(data: bytes, size: int = 64 << 10) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_chunked_body_over_the_limit_is_a_413(gunicorn_url, accounts, settings):
    headers = {**accounts["alice"].headers, "Content-Type": "application/json"}
    huge = json.dumps({"name": "x" * (settings.max_request_bytes + 100_000)}).encode()
    status, _, body = raw_request(
        gunicorn_url, "POST", "/api/v1/jobs", headers, chunks(huge), chunked=True
    )
    assert status == 413 and json.loads(body)["error"]["code"] == "request_entity_too_large"
    small = json.dumps(parked_spec("builtin:sentiment")).encode()
    status, _, body = raw_request(
        gunicorn_url, "POST", "/api/v1/jobs", headers, chunks(small, 100), chunked=True
    )
    assert status == 201, body


def test_http_server_refusals(gunicorn_url, accounts):
    """gunicorn refuses a request line past 4,094 bytes (414) and a header past 8,190 (431)
    itself, before the app sees them (README: Configuration)."""
    status, _, _ = raw_request(gunicorn_url, "GET", "/api/v1/jobs?q=" + "a" * 5000)
    assert status == 414
    status, _, _ = raw_request(gunicorn_url, "GET", "/healthz", {"X-Big": "b" * 9000})
    assert status == 431
    status, _, body = raw_request(
        gunicorn_url, "GET", "/api/v1/jobs/%EF%BC%92", accounts["alice"].headers
    )
    assert status == 404 and "invalid id" in json.loads(body)["error"]["message"]


# ---------------------------------------------------------------- random bodies


def nested(depth: int, leaf: str, kinds: list[bool]) -> str:
    text = leaf
    for level in range(depth):
        text = f"[{text}]" if kinds[level % len(kinds)] else '{"k":' + text + "}"
    return text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


def value_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(value_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(value_depth, value.values()), default=0)
    return 0


@given(
    depth=st.integers(0, 3000) | st.integers(55, 70),
    leaf=json_values,
    kinds=st.lists(st.booleans(), min_size=1, max_size=5),
    padding=st.integers(0, 1_100_000) | st.integers(0, 2000),
    field=st.sampled_from(["model", "data", "name", "training", "extra"]),
    route=st.sampled_from(["/api/v1/jobs", "/api/v1/jobs/1/predict", "/api/v1/jobs/1/generate"]),
)
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_depth_and_size_never_5xx(client, depth, leaf, kinds, padding, field, route):
    """Bodies of random nesting depth and size: never a 5xx, always the error shape (or the
    job); past the size limit a 413, past 64 levels a 400 that says so."""
    inner = nested(depth, json.dumps(leaf), kinds)
    body = f'{{"name": "{"p" * padding}", "{field}": {inner}}}'
    response = post_json(client, route, body)
    assert response.status_code in (200, 201, 400, 404, 409, 413, 422), response.status_code
    if response.status_code >= 400:
        error = response.json["error"]
        assert set(error) == {"code", "message", "fields"} and error["message"]
    levels = 1 + depth + value_depth(leaf)
    if len(body.encode()) > 1 << 20:
        assert response.status_code == 413
    elif levels > 64:
        assert response.status_code == 400 and "nested deeper than 64" in error["message"]
    else:
        assert (
            response.status_code == 201 or "nested deeper" not in response.json["error"]["message"]
        )


# ---------------------------------------------------------------- 15: seqtrain up


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == parent and int(entry.name) not in found:
                found.add(int(entry.name))
                frontier.append(int(entry.name))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


@pytest.mark.e2e
def test_seqtrain_up_children_die_with_it_on_sigkill(tmp_path):
    from cli.services import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(SEQTRAIN_VAR_DIR=str(tmp_path / "var"), SEQTRAIN_SECRET_KEY="hostile-test")
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    children: set[int] = set()
    try:
        wait_until(lambda: "Seqtrain is up" in log.read_text(), 120, message="seqtrain up")
        children = descendants(up.pid)
        names = " ".join(command_line(pid) for pid in children)
        assert "redis-server" in names and "gunicorn" in names and "celery" in names, names
        os.kill(up.pid, signal.SIGKILL)
        up.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.2)
        left = {pid: command_line(pid) for pid in children if alive(pid)}
        assert not left, left
    finally:
        if up.poll() is None:
            children |= descendants(up.pid)
            up.kill()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
