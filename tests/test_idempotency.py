"""Idempotency-Key on POST /jobs and POST /jobs/<id>/retry: a retried request returns the first
job, never a second."""

from shared import jobs
from shared.infra.models import Job
from tests.helpers import row_count, tiny_spec


def test_a_retried_post_returns_the_same_job(client, db):
    headers = {"Idempotency-Key": "submit-7f3a"}
    spec = tiny_spec(resources={"queue": "nobody-listens"})
    first = client.post("/api/v1/jobs", json=spec, headers=headers)
    again = client.post("/api/v1/jobs", json=spec, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json["id"] == first.json["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert row_count(db, Job) == 1
    # Without the key, or with another one, each POST is a new job.
    assert client.post("/api/v1/jobs", json=spec).json["id"] != first.json["id"]
    other = client.post("/api/v1/jobs", json=spec, headers={"Idempotency-Key": "other"})
    assert other.status_code == 201 and row_count(db, Job) == 3


def test_the_key_is_per_user(client, app, accounts, db):
    from tests.conftest import authed_client

    spec = tiny_spec(resources={"queue": "nobody-listens"})
    headers = {"Idempotency-Key": "shared-key"}
    mine = client.post("/api/v1/jobs", json=spec, headers=headers)
    theirs = authed_client(app, accounts["bob"]).post("/api/v1/jobs", json=spec, headers=headers)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json["id"] != theirs.json["id"]


def test_a_key_reused_with_another_spec_is_refused(client, db):
    headers = {"Idempotency-Key": "k1"}
    assert client.post("/api/v1/jobs", json=tiny_spec(), headers=headers).status_code == 201
    response = client.post("/api/v1/jobs", json=tiny_spec(name="changed"), headers=headers)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "idempotency_key_reused"
    assert response.json["error"]["fields"][0]["path"] == "Idempotency-Key"
    assert row_count(db, Job) == 1


def test_a_malformed_key_is_a_400_naming_the_header(client, db):
    for bad in ("", "has space", "x" * 201, "tab\there"):
        response = client.post("/api/v1/jobs", json=tiny_spec(), headers={"Idempotency-Key": bad})
        assert response.status_code == 400, bad
        assert response.json["error"]["fields"][0]["path"] == "Idempotency-Key"
    assert row_count(db, Job) == 0


def test_a_retried_retry_returns_the_same_job(client, db):
    spec = tiny_spec(resources={"queue": "nobody-listens"})
    source = client.post("/api/v1/jobs", json=spec).json["id"]
    jobs.request_cancel(db, source, "alice")
    headers = {"Idempotency-Key": "retry-51c2"}
    first = client.post(f"/api/v1/jobs/{source}/retry", headers=headers)
    again = client.post(f"/api/v1/jobs/{source}/retry", headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json["id"] == first.json["id"] != source
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert row_count(db, Job) == 2
    notes = [e.message for e in jobs.job_events(db, first.json["id"])]
    assert notes.count(f"retry of job {source}") == 1
    # The key belongs to the retry now: a submit with another spec may not reuse it.
    reused = client.post("/api/v1/jobs", json=tiny_spec(name="other"), headers=headers)
    assert reused.status_code == 422 and reused.json["error"]["code"] == "idempotency_key_reused"
    bad = client.post(f"/api/v1/jobs/{source}/retry", headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400 and row_count(db, Job) == 2
