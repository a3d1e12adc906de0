"""/api/v1/jobs against a real database and a real Redis (no worker: jobs stay queued)."""

from dataclasses import replace

import pytest
import redis
from sqlalchemy import select

from cli.services import free_port
from shared import jobs
from shared.infra.models import Job, JobEvent
from tests.helpers import row_count, tiny_spec


def assert_error_shape(body, code):
    assert set(body) == {"error"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert isinstance(body["error"]["fields"], list)


def test_submit_stores_and_enqueues_the_id_only(client, db, settings):
    queue = f"{settings.default_queue}-submit"
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(queue)
    response = client.post("/api/v1/jobs", json=tiny_spec(resources={"queue": queue}))
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "queued" and body["enqueued"] is True
    assert response.headers["Location"] == f"/api/v1/jobs/{body['id']}"
    job = jobs.get_job(db, body["id"])
    assert job.spec["model"]["type"] == "lstm" and job.spec["training"]["weight_decay"] == 0.01
    # The message on Redis is JSON carrying only the job id.
    import json

    message = json.loads(broker.lpop(queue))
    assert message["headers"]["task"] == "seqtrain.run_job"
    assert message["content-type"] == "application/json"
    import base64

    assert json.loads(base64.b64decode(message["body"]))[0] == [body["id"]]


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (tiny_spec(model={"type": "cnn"}), "model.type"),
        (tiny_spec(training={"lr": -1.0}), "training.lr"),
        ({k: v for k, v in tiny_spec().items() if k != "name"}, "name"),
        (tiny_spec(training={"batch_size": "32"}), "training.batch_size"),
        (tiny_spec(extra_field=1), "extra_field"),
        (tiny_spec(model={"hidden_size": 8192, "num_layers": 24, "embedding_dim": 4096}), "model"),
    ],
    ids=[
        "unknown-model-type",
        "negative-lr",
        "missing-name",
        "wrong-type",
        "extra-field",
        "oversize-model",
    ],
)
def test_bad_spec_is_422_naming_the_field_and_stores_nothing(client, db, spec, path):
    before = row_count(db, Job)
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 422
    assert_error_shape(response.json, "validation_error")
    assert path in [f["path"] for f in response.json["error"]["fields"]]
    assert path in response.json["error"]["message"]
    assert row_count(db, Job) == before


def test_oversize_message_gives_the_numbers(client):
    response = client.post(
        "/api/v1/jobs", json=tiny_spec(model={"hidden_size": 8192, "num_layers": 24})
    )
    (field,) = response.json["error"]["fields"]
    assert "parameters" in field["message"] and "100,000,000" in field["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "name: x", "content_type": "text/yaml"}, 415, "unsupported_media_type"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "bad_request"),
        ({"json": [1, 2]}, 422, "validation_error"),
    ],
)
def test_malformed_bodies(client, db, kwargs, status, code):
    response = client.post("/api/v1/jobs", **kwargs)
    assert response.status_code == status
    assert_error_shape(response.json, code)
    assert row_count(db, Job) == 0


def test_detail_list_and_filters(client, db):
    first = client.post("/api/v1/jobs", json=tiny_spec(name="a")).json["id"]
    second = client.post("/api/v1/jobs", json=tiny_spec(name="b")).json["id"]
    detail = client.get(f"/api/v1/jobs/{first}").json
    assert detail["name"] == "a" and detail["status"] == "queued" and detail["attempt"] == 0
    assert detail["spec"]["name"] == "a" and detail["latest_metrics"] == {}
    assert detail["events"][0]["to_status"] == "queued" and detail["error"] is None
    assert detail["created_at"].endswith("Z")  # UTC, ISO 8601
    assert detail["owner"] == "alice"

    page = client.get("/api/v1/jobs?limit=1").json
    assert [j["id"] for j in page["jobs"]] == [second] and page["next_cursor"] == second
    page = client.get(f"/api/v1/jobs?limit=1&cursor={page['next_cursor']}").json
    assert [j["id"] for j in page["jobs"]] == [first] and page["next_cursor"] is None
    client.post(f"/api/v1/jobs/{first}/cancel")
    assert [j["id"] for j in client.get("/api/v1/jobs?status=cancelled").json["jobs"]] == [first]
    assert [j["id"] for j in client.get("/api/v1/jobs?status=queued").json["jobs"]] == [second]


@pytest.mark.parametrize("query", ["status=done", "limit=0", "limit=abc", "limit=501", "cursor=-3"])
def test_bad_query_parameters_are_400_naming_them(client, query):
    response = client.get(f"/api/v1/jobs?{query}")
    assert response.status_code == 400
    assert_error_shape(response.json, "invalid_parameter")
    assert response.json["error"]["fields"][0]["path"] == query.split("=")[0]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/999999",
        "/api/v1/jobs/999999/metrics",
        "/api/v1/jobs/999999/checkpoints",
        "/api/v1/jobs/999999/checkpoints/1/download",
        "/api/v1/nowhere",
    ],
)
def test_not_found_is_json(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert_error_shape(response.json, "not_found")


def test_wrong_method_is_json(client):
    response = client.delete("/api/v1/jobs")
    assert response.status_code == 405
    assert_error_shape(response.json, "method_not_allowed")


def test_cancel_queued_then_conflict(client):
    job_id = client.post("/api/v1/jobs", json=tiny_spec()).json["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert_error_shape(again.json, "conflict")


def test_enqueue_failure_keeps_the_job_queued(settings, db, accounts):
    from api import create_app

    dead = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(dead, {"TESTING": True})
    response = app.test_client().post(
        "/api/v1/jobs", json=tiny_spec(), headers=accounts["alice"].headers
    )
    assert response.status_code == 201 and response.json["enqueued"] is False
    job_id = response.json["id"]
    assert jobs.get_job(db, job_id).status == "queued"
    with db.session() as s:
        messages = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert any(m.startswith("enqueue failed") for m in messages)
    health = app.test_client().get("/healthz")
    assert health.status_code == 503 and health.json["database"] == "ok"
    assert health.json["redis"].startswith("unavailable")
    app.extensions["seqtrain"].db.dispose()


def test_database_down_is_503_json(settings, accounts):
    from api import create_app

    dead = replace(
        settings, database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    )
    app = create_app(dead, {"TESTING": True})
    response = app.test_client().get("/api/v1/jobs", headers=accounts["alice"].headers)
    assert response.status_code == 503
    assert_error_shape(response.json, "database_unavailable")
    assert response.headers["Retry-After"] == "5"


def test_healthz_ok_and_open(anon):
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "redis": "ok"}
