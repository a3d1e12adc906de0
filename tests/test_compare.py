"""GET /api/v1/compare?jobs=...: final and best metrics from real metric rows, the spec
differences, the 400s and 404s that name `jobs`, and who may compare what."""

from __future__ import annotations

import pytest

from api.compare import direction, flatten, spec_differences
from shared import jobs
from shared.spec import parse_spec
from tests.conftest import authed_client
from tests.helpers import tiny_spec


def make_job(db, account, name, **sections):
    spec = parse_spec(tiny_spec(name=name, resources={"queue": "nobody"}, **sections))
    return jobs.create_job(db, spec, account.user_id).id


def write(db, job_id, attempt, rows):
    """rows: (step, epoch, split, name, value)"""
    for step, epoch, split, name, value in rows:
        metric = {"step": step, "epoch": epoch, "split": split, "name": name, "value": value}
        jobs.write_metrics(db, job_id, attempt, [metric], epoch=epoch, step=step)


@pytest.fixture
def two_runs(db, accounts):
    """Two of alice's jobs that differ in lr and model type, with metrics written by their
    running attempts."""
    alice = accounts["alice"]
    first = make_job(db, alice, "lr-small", training={"lr": 0.001})
    second = make_job(db, alice, "lr-big", training={"lr": 0.01}, model={"type": "gru"})
    a1 = jobs.claim(db, first, "test", 60)
    a2 = jobs.claim(db, second, "test", 60)
    write(db, first, a1, [
        (5, 0, "train", "loss", 0.9),
        (10, 1, "val", "loss", 0.70),
        (10, 1, "val", "accuracy", 0.60),
        (15, 1, "train", "loss", 0.5),
        (20, 2, "val", "loss", 0.55),
        (20, 2, "val", "accuracy", 0.80),
        (30, 3, "val", "loss", 0.65),  # overfits: the last is not the best
        (30, 3, "val", "accuracy", 0.75),
    ])  # fmt: skip
    write(db, second, a2, [
        (10, 1, "val", "loss", 0.40),
        (10, 1, "val", "accuracy", 0.90),
        (20, 2, "val", "loss", 0.45),
        (20, 2, "val", "accuracy", 0.90),  # a tie: the earlier step is the best
    ])  # fmt: skip
    jobs.finish(db, first, a1, "succeeded", "done", "test")
    return first, second


def test_final_and_best_metrics_and_the_spec_diff(client, two_runs):
    first, second = two_runs
    response = client.get(f"/api/v1/compare?jobs={first},{second}")
    assert response.status_code == 200, response.json
    body = response.json
    one, two = body["jobs"]
    assert [one["id"], two["id"]] == [first, second]
    assert one["name"] == "lr-small" and one["status"] == "succeeded"
    assert two["status"] == "running" and two["model_type"] == "gru"
    assert one["finished_at"] and one["started_at"] and two["finished_at"] is None
    assert one["url"] == f"/api/v1/jobs/{first}"

    assert one["final"]["val/accuracy"] == {"value": 0.75, "step": 30, "epoch": 3}
    assert one["final"]["val/loss"]["value"] == 0.65
    assert one["final"]["train/loss"] == {"value": 0.5, "step": 15, "epoch": 1}
    assert one["best"] == {
        "val/accuracy": {"value": 0.80, "step": 20, "epoch": 2},
        "val/loss": {"value": 0.55, "step": 20, "epoch": 2},
    }
    assert two["best"]["val/accuracy"] == {"value": 0.90, "step": 10, "epoch": 1}
    assert two["best"]["val/loss"]["value"] == 0.40
    assert "train/loss" not in two["final"]
    assert body["directions"] == {"val/accuracy": "max", "val/loss": "min"}

    diff = {d["path"]: d["values"] for d in body["spec_differences"]}
    assert diff["training.lr"] == [0.001, 0.01]
    assert diff["model.type"] == ["lstm", "gru"]
    assert diff["name"] == ["lr-small", "lr-big"]
    assert "training.epochs" not in diff and "data.dataset" not in diff
    assert set(diff) == {"name", "training.lr", "model.type"}


def test_the_order_of_the_ids_is_the_order_of_the_answer(client, two_runs):
    first, second = two_runs
    body = client.get(f"/api/v1/compare?jobs={second}, {first}").json
    assert [j["id"] for j in body["jobs"]] == [second, first]
    diff = {d["path"]: d["values"] for d in body["spec_differences"]}
    assert diff["training.lr"] == [0.01, 0.001]


@pytest.mark.parametrize(
    "value",
    ["1", "1,2,3,4,5,6,7,8,9", "a,b", "1,,2", "1,1", "0,1", "1,-2", "1,99999999999999999999", "",
     "1;2", "١,٢"],
)  # fmt: skip
def test_a_bad_list_of_ids_is_a_400_naming_jobs(client, value):
    response = client.get("/api/v1/compare", query_string={"jobs": value})
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_parameter"
    assert [f["path"] for f in response.json["error"]["fields"]] == ["jobs"]


def test_no_jobs_parameter_or_an_unknown_one_is_a_400(client):
    response = client.get("/api/v1/compare")
    assert response.status_code == 400
    assert response.json["error"]["fields"][0]["path"] == "jobs"
    response = client.get("/api/v1/compare?jobs=1,2&extra=1")
    assert response.status_code == 400
    assert response.json["error"]["fields"][0]["path"] == "extra"


def test_another_users_job_or_a_missing_one_is_a_404_naming_jobs(client, db, accounts, two_runs):
    first, _ = two_runs
    bobs = make_job(db, accounts["bob"], "bob-private")
    for ids, named in (((first, bobs), f"job {bobs} "), ((first, bobs, 999999), "jobs")):
        response = client.get("/api/v1/compare?jobs=" + ",".join(map(str, ids)))
        assert response.status_code == 404, response.json
        error = response.json["error"]
        assert error["code"] == "not_found" and error["fields"][0]["path"] == "jobs"
        assert named in error["message"]
        assert "bob-private" not in response.get_data(as_text=True)


def test_an_admin_compares_anyones_jobs(app, db, accounts, two_runs):
    first, _ = two_runs
    bobs = make_job(db, accounts["bob"], "bob-job", task="classification")
    response = authed_client(app, accounts["root"]).get(f"/api/v1/compare?jobs={bobs},{first}")
    assert response.status_code == 200, response.json
    assert [j["name"] for j in response.json["jobs"]] == ["bob-job", "lr-small"]
    assert response.json["jobs"][0]["final"] == {} and response.json["jobs"][0]["best"] == {}


def test_it_needs_a_token_and_is_in_the_openapi_document(anon, client):
    assert anon.get("/api/v1/compare?jobs=1,2").status_code == 401
    doc = client.get("/api/v1/openapi.json").json
    operation = doc["paths"]["/api/v1/compare"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["jobs"]
    assert {"200", "400", "404"} <= set(operation["responses"])


def test_directions_follow_the_task_and_the_metric_name():
    assert direction("classification", "accuracy") == "max"
    assert direction("language_modeling", "loss") == "min"
    assert direction("language_modeling", "perplexity") == "min"
    assert direction("tagging", "f1") == "max"
    assert direction("tagging", "token_accuracy") == "max"
    assert direction("classification", "ece") == "min"


def test_spec_differences_flatten_nested_fields_and_keep_lists_whole():
    specs = [
        {"a": {"b": 1, "c": [1, 2]}, "d": True, "e": {}},
        {"a": {"b": 1, "c": [1, 3]}, "d": 1, "e": {}},
        {"a": {"b": 2, "c": [1, 2]}, "d": True},
    ]
    assert flatten(specs[0]) == {"a.b": 1, "a.c": [1, 2], "d": True, "e": {}}
    assert spec_differences(specs) == [
        {"path": "a.b", "values": [1, 1, 2]},
        {"path": "a.c", "values": [[1, 2], [1, 3], [1, 2]]},
        {"path": "d", "values": [True, 1, True]},
        {"path": "e", "values": [{}, {}, None]},
    ]
