"""/api/v1/sweeps on real SQL: submit (201 with the sweep, 422s naming the field), list,
detail with trials made by the store, who may see and cancel what, cancel cascading to the
trials' jobs, a trial's job naming its sweep, and the Prometheus gauge of trials."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from api.sweeps import epochs_trained, figures
from shared import jobs
from shared.infra.models import Job, Sweep, utcnow
from shared.jobs import workers
from shared.protocol import JobStatus
from shared.spec import parse_spec
from shared.sweeps import store
from shared.sweeps.spec import trial_spec
from tests.conftest import authed_client
from tests.helpers import tiny_spec

# The tests make the trials (conftest.reconcilers_paused).
pytestmark = pytest.mark.usefixtures("reconcilers_paused")
QUEUE = "nobody-listens"
SAMPLE = re.compile(r"seqtrain_sweep_trials\{(?P<labels>[^}]*)\} (?P<value>\S+)")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def sweep_request(**overrides) -> dict:
    return {
        "name": "tiny-sweep",
        "spec": tiny_spec(resources={"queue": QUEUE}),
        "parameters": {
            "training.lr": {"type": "float", "low": 0.0001, "high": 0.01, "log": True},
            "model.pooling": {"type": "categorical", "choices": ["mean", "max"]},
        },
        "objective": {"metric": "val/accuracy", "direction": "maximize"},
        "max_trials": 6,
        "max_parallel": 2,
        **overrides,
    }


def submit(client, **overrides):
    return client.post("/api/v1/sweeps", json=sweep_request(**overrides))


def add_trial(db, sweep_id: int, number: int, lr: float) -> int:
    """Trial `number` of the sweep, its queued job made by the store as the controller does."""
    sweep = store.get_sweep(db, sweep_id)
    params = {"training.lr": lr, "model.pooling": "mean"}
    spec = parse_spec(trial_spec(sweep.config["spec"], params, f"{sweep.name} #{number}"))
    job_id = store.create_trial(db, sweep, number, number, params, spec, (None, 1))
    assert job_id is not None
    return job_id


def set_job(db, job_id: int, **values) -> None:
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


# ---------------------------------------------------------------- the pure figures


def view(number, status, step=0, epochs=3, job_id=None, value=None):
    return store.TrialView(
        number, job_id, number, {"training.lr": 0.01 * (number + 1)}, status, value,
        0, 0, False, None, step, 0, epochs,
    )  # fmt: skip


def test_figures_count_every_status_sum_epochs_and_find_the_best():
    trials = [
        view(0, "succeeded", step=300, job_id=10, value=0.8),
        view(1, "pruned", step=100, job_id=11, value=0.5),
        view(2, "running", step=50, job_id=12),
        view(3, "failed"),  # a sampled spec that never ran: no job
    ]
    steps = {10: 300, 11: 300, 12: None}
    found = figures(trials, steps, best_number=0, best_value=0.81)
    assert found.counts == {
        "queued": 0, "running": 1, "paused": 0, "succeeded": 1,
        "failed": 1, "cancelled": 0, "pruned": 1,
    }  # fmt: skip
    assert found.trial_epochs == {0: 3.0, 1: 1.0, 2: 0.0, 3: 0.0}
    assert found.epochs_trained == 4.0
    assert found.best_trial == {
        "number": 0, "job_id": 10, "value": 0.81, "params": {"training.lr": 0.01},
    }  # fmt: skip
    assert figures(trials, steps, best_number=None).best_trial is None
    assert figures(trials, steps, best_number=1).best_trial["value"] == 0.5
    assert figures([], {}, best_number=4).best_trial is None
    assert epochs_trained(1053, 3, 3159) == pytest.approx(1.0)
    assert epochs_trained(500, 3, None) == 0.0


# ---------------------------------------------------------------- submit, list, detail


def test_a_valid_sweep_is_201_and_listed_with_its_shape(client, app, accounts):
    response = submit(client)
    assert response.status_code == 201, response.json
    body = response.json
    assert response.headers["Location"] == f"/api/v1/sweeps/{body['id']}"
    assert body["name"] == "tiny-sweep" and body["status"] == "running"
    assert body["owner"] == "alice"
    assert body["objective"] == {"metric": "val/accuracy", "direction": "maximize"}
    assert body["sampler"] == "tpe" and body["seed"] == 0
    assert body["pruner"] == {
        "type": "asha", "unit": "epochs", "min_resource": 1,
        "reduction_factor": 3, "startup_trials": 5,
    }  # fmt: skip
    assert (body["max_trials"], body["max_parallel"]) == (6, 2)
    assert body["parameters"]["training.lr"] == {
        "type": "float", "low": 0.0001, "high": 0.01, "log": True, "step": None,
    }  # fmt: skip
    assert body["parameters"]["model.pooling"] == {
        "type": "categorical",
        "choices": ["mean", "max"],
    }
    # The base spec with every default filled, as each trial starts from it.
    assert body["spec"]["training"]["lr"] == 0.01 and body["spec"]["resources"]["queue"] == QUEUE
    assert "weight_decay" in body["spec"]["training"]
    assert body["cancel_requested"] is False and body["error"] is None
    assert body["created_at"].endswith("Z") and body["finished_at"] is None
    assert body["counts"] == dict.fromkeys(
        ("queued", "running", "paused", "succeeded", "failed", "cancelled", "pruned"), 0
    )
    assert body["epochs_trained"] == 0.0 and body["best_trial"] is None
    assert body["trials"] == []

    listed = client.get("/api/v1/sweeps").json["sweeps"]
    assert [s["id"] for s in listed] == [body["id"]]
    assert "trials" not in listed[0] and "spec" not in listed[0]
    assert listed[0]["counts"] == body["counts"] and listed[0]["owner"] == "alice"
    assert client.get("/api/v1/sweeps?status=running").json["sweeps"][0]["id"] == body["id"]
    assert client.get("/api/v1/sweeps?status=cancelled").json["sweeps"] == []
    shown = client.get(f"/api/v1/sweeps/{body['id']}")
    assert shown.status_code == 200 and shown.json == body


def test_detail_shows_trials_progress_and_the_best(client, db):
    sweep_id = submit(client).json["id"]
    first = add_trial(db, sweep_id, 0, 0.001)
    second = add_trial(db, sweep_id, 1, 0.005)
    set_job(db, first, status=JobStatus.SUCCEEDED, step=60, epoch=3, total_steps=60)
    set_job(db, second, status=JobStatus.RUNNING, step=10, epoch=0, total_steps=60)
    store.update_trial(db, sweep_id, 0, value=0.75, status=JobStatus.SUCCEEDED)
    store.set_best(db, sweep_id, (0, 0.75))

    body = client.get(f"/api/v1/sweeps/{sweep_id}").json
    assert body["counts"]["succeeded"] == 1 and body["counts"]["running"] == 1
    assert body["epochs_trained"] == pytest.approx(3.5)
    assert body["best_trial"] == {
        "number": 0,
        "job_id": first,
        "value": 0.75,
        "params": {"training.lr": 0.001, "model.pooling": "mean"},
    }
    one, two = body["trials"]
    assert one == {
        "number": 0, "job_id": first, "status": "succeeded",
        "params": {"training.lr": 0.001, "model.pooling": "mean"}, "value": 0.75,
        "epochs_trained": 3.0, "epochs": 3, "step": 60, "held": False, "error": None,
        "url": f"/jobs/{first}",
    }  # fmt: skip
    assert two["status"] == "running" and two["epochs_trained"] == pytest.approx(0.5)
    assert two["value"] is None and two["url"] == f"/jobs/{second}"
    listed = client.get("/api/v1/sweeps").json["sweeps"][0]
    assert listed["epochs_trained"] == pytest.approx(3.5)
    assert listed["best_trial"]["job_id"] == first


# ---------------------------------------------------------------- 422s naming the field

LR = "parameters.training.lr"
CASES = {
    "unknown path": ({"parameters": {"training.nope": {"type": "int", "low": 1, "high": 2}}},
                     "parameters.training.nope", "not a job spec field"),
    "a section": ({"parameters": {"training": {"type": "int", "low": 1, "high": 2}}},
                  "parameters.training", "is a section"),
    "past the field's bounds": (
        {"parameters": {"training.lr": {"type": "float", "low": 0.1, "high": 20}}}, LR, "<= 10"),
    "low above high": (
        {"parameters": {"training.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, LR, "above"),
    "log from 0": (
        {"parameters": {"training.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
        LR, "log"),
    "objective not reported": (
        {"objective": {"metric": "val/f1", "direction": "maximize"}}, "objective.metric",
        "val/accuracy"),
    "grid float without step": ({"sampler": "grid"}, LR, "step"),
    "grid smaller than max_trials": (
        {"sampler": "grid", "max_trials": 3,
         "parameters": {"model.pooling": {"type": "categorical", "choices": ["mean", "max"]}}},
        "max_trials", "2 points"),
    "a grid of two billion seeds": (
        {"sampler": "grid",
         "parameters": {"training.seed": {"type": "int", "low": 0, "high": 2**31 - 1}}},
        "parameters.training.seed", "100,000 points"),
    "a grid float step too fine to count": (
        {"sampler": "grid",
         "parameters": {"training.lr": {"type": "float", "low": 1e-300, "high": 10, "step": 1e-300}}},
        LR, "100,000 points"),
    "a grid whose product is too large": (
        {"sampler": "grid",
         "parameters": {"training.batch_size": {"type": "int", "low": 1, "high": 100},
                        "training.seed": {"type": "int", "low": 0, "high": 99},
                        "model.hidden_size": {"type": "int", "low": 1, "high": 100}}},
        "parameters.model.hidden_size", "100,000 points"),
    "a corner past the model size cap": (
        {"parameters": {"model.hidden_size": {"type": "int", "low": 1, "high": 8192}}},
        "parameters.model.hidden_size", "100,000,000"),
    "a base spec that is invalid": (
        {"spec": tiny_spec(model={"type": "nope"})}, "spec.model.type", "Input should be"),
    "an unknown distribution": (
        {"parameters": {"training.lr": {"type": "beta", "low": 0, "high": 1}}},
        "parameters.training.lr", "tag"),
    "a missing objective": ({"objective": None}, "objective", ""),
    "a dataset that does not exist": (
        {"spec": tiny_spec(data={"dataset": "dataset:999999"})}, "spec.data.dataset", "999999"),
    "a job that may not be preempted, from a user": (
        {"spec": tiny_spec(resources={"preemptible": False})}, "spec.resources.preemptible",
        "only an admin"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_sweeps_are_422s_naming_the_field(client, db, case):
    overrides, path, words = CASES[case]
    response = submit(client, **overrides)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith("invalid sweep: ") and path in error["message"]
    paths = [f["path"] for f in error["fields"]]
    assert paths[0] == path, error
    assert words in error["fields"][0]["message"]
    assert client.get("/api/v1/sweeps").json["sweeps"] == []  # nothing stored
    assert jobs.list_jobs(db)[0] == []


def test_a_base_spec_no_worker_could_hold_is_refused_naming_the_field(client, db):
    workers.register(
        db,
        name="two-devices",
        hostname="host",
        pid=1,
        queues=[QUEUE],
        device_kind="cpu",
        device_count=2,
        devices=[{"index": i, "name": "cpu", "memory_bytes": 8 << 30} for i in range(2)],
    )
    spec = tiny_spec(resources={"queue": QUEUE, "devices": 4})
    response = submit(client, spec=spec)
    assert response.status_code == 422, response.json
    (field,) = response.json["error"]["fields"]
    assert field["path"] == "spec.resources.devices" and field["type"] == "placement"
    assert "at most 2" in field["message"]
    assert (
        submit(client, spec=tiny_spec(resources={"queue": QUEUE, "devices": 2})).status_code == 201
    )


def test_a_sweep_error_names_its_field_with_type_sweep(client):
    response = submit(client, objective={"metric": "val/f1", "direction": "maximize"})
    assert response.json["error"]["fields"] == [
        {
            "path": "objective.metric",
            "message": "classification reports val/loss, val/accuracy; not val/f1",
            "type": "sweep",
        }
    ]


def test_bodies_that_are_not_sweeps(client):
    assert client.post("/api/v1/sweeps", data="name: x").status_code == 415
    assert (
        client.post("/api/v1/sweeps", data="{", content_type="application/json").status_code == 400
    )
    assert client.post("/api/v1/sweeps", json=[1]).status_code == 422
    assert client.get("/api/v1/sweeps?status=paused").status_code == 400
    assert client.get("/api/v1/sweeps?limit=0").json["error"]["fields"][0]["path"] == "limit"


# ---------------------------------------------------------------- who may do what


def test_auth_and_ownership(app, anon, client, accounts):
    assert anon.post("/api/v1/sweeps", json=sweep_request()).status_code == 401
    assert anon.get("/api/v1/sweeps").status_code == 401
    sweep_id = submit(client).json["id"]
    bob = authed_client(app, accounts["bob"])
    assert bob.get(f"/api/v1/sweeps/{sweep_id}").status_code == 404
    cancelled = bob.post(f"/api/v1/sweeps/{sweep_id}/cancel")
    assert cancelled.status_code == 404 and cancelled.json["error"]["code"] == "not_found"
    assert bob.get("/api/v1/sweeps").json["sweeps"] == []
    assert client.get(f"/api/v1/sweeps/{sweep_id}").json["cancel_requested"] is False
    missing = client.get(f"/api/v1/sweeps/{sweep_id + 1000}")
    assert missing.status_code == 404 and bob.get(f"/api/v1/sweeps/{sweep_id}").json == {
        "error": {"code": "not_found", "message": f"sweep {sweep_id} not found", "fields": []}
    }
    root = authed_client(app, accounts["root"])
    assert [s["id"] for s in root.get("/api/v1/sweeps").json["sweeps"]] == [sweep_id]
    assert root.get(f"/api/v1/sweeps/{sweep_id}").json["owner"] == "alice"


# ---------------------------------------------------------------- cancel


def test_cancel_flags_the_sweep_and_cancels_its_trials(client, db, accounts):
    sweep_id = submit(client).json["id"]
    queued = add_trial(db, sweep_id, 0, 0.001)
    running = add_trial(db, sweep_id, 1, 0.002)
    paused = add_trial(db, sweep_id, 2, 0.003)
    done = add_trial(db, sweep_id, 3, 0.004)
    jobs.claim(db, running, "test", 60)
    set_job(db, paused, status=JobStatus.PAUSED)
    set_job(db, done, status=JobStatus.SUCCEEDED)
    other = jobs.create_job(db, parse_spec(tiny_spec(resources={"queue": QUEUE})), None).id

    response = client.post(f"/api/v1/sweeps/{sweep_id}/cancel")
    assert response.status_code == 202, response.json
    body = response.json
    assert body["cancel_requested"] is True and body["status"] == "running"
    status = {t["job_id"]: t["status"] for t in body["trials"]}
    assert status == {
        queued: "cancelled",
        running: "running",
        paused: "cancelled",
        done: "succeeded",
    }
    assert jobs.get_job(db, running).cancel_requested is True  # its supervisor stops it
    assert jobs.get_job(db, other).status == "queued"  # not a trial: untouched
    assert store.get_sweep(db, sweep_id).cancel_requested is True
    events = [e.actor for e in jobs.job_events(db, queued)]
    assert events[-1] == "alice"
    # Again while the sweep winds down: still 202, nothing more to do.
    assert client.post(f"/api/v1/sweeps/{sweep_id}/cancel").status_code == 202

    assert store.finish_sweep(db, sweep_id, "cancelled", None, None)
    again = client.post(f"/api/v1/sweeps/{sweep_id}/cancel")
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"
    assert "cancelled" in again.json["error"]["message"]
    shown = client.get(f"/api/v1/sweeps/{sweep_id}").json
    assert shown["status"] == "cancelled" and shown["finished_at"].endswith("Z")


# ---------------------------------------------------------------- a trial's job


def test_the_job_detail_of_a_trial_names_its_sweep(client, db):
    sweep_id = submit(client).json["id"]
    job_id = add_trial(db, sweep_id, 4, 0.001)
    detail = client.get(f"/api/v1/jobs/{job_id}").json
    assert detail["sweep"] == {"id": sweep_id, "number": 4, "url": f"/api/v1/sweeps/{sweep_id}"}
    plain = client.post("/api/v1/jobs", json=tiny_spec(resources={"queue": QUEUE})).json["id"]
    assert client.get(f"/api/v1/jobs/{plain}").json["sweep"] is None


# ---------------------------------------------------------------- Prometheus


def gauge(text: str, sweep_id: int) -> dict[str, float]:
    """status -> value of the sweep's seqtrain_sweep_trials samples."""
    found = {}
    for line in text.splitlines():
        match = SAMPLE.fullmatch(line)
        if match and dict(LABEL.findall(match["labels"])).get("sweep") == str(sweep_id):
            found[dict(LABEL.findall(match["labels"]))["status"]] = float(match["value"])
    return found


def test_prometheus_reports_trials_of_running_and_recent_sweeps(client, anon, db):
    live = submit(client).json["id"]
    for number in range(3):
        add_trial(db, live, number, 0.001 * (number + 1))
    jobs.claim(db, add_trial(db, live, 3, 0.005), "test", 60)
    recent, old = submit(client).json["id"], submit(client).json["id"]
    pruned = add_trial(db, recent, 0, 0.001)
    set_job(db, pruned, status=JobStatus.PRUNED)
    add_trial(db, old, 0, 0.001)
    store.finish_sweep(db, recent, "succeeded", None, None)
    store.finish_sweep(db, old, "succeeded", None, None)
    with db.session() as session:
        session.execute(
            update(Sweep).where(Sweep.id == old).values(finished_at=utcnow() - timedelta(days=2))
        )

    text = anon.get("/metrics").get_data(as_text=True)
    assert "# TYPE seqtrain_sweep_trials gauge" in text
    assert "# HELP seqtrain_sweep_trials " in text
    assert gauge(text, live) == {
        "queued": 3.0, "running": 1.0, "paused": 0.0, "succeeded": 0.0,
        "failed": 0.0, "cancelled": 0.0, "pruned": 0.0,
    }  # fmt: skip
    assert gauge(text, recent)["pruned"] == 1.0 and sum(gauge(text, recent).values()) == 1.0
    assert gauge(text, old) == {}  # finished two days ago: no longer reported


def test_a_grid_within_its_size_is_accepted(client):
    parameters = {
        "training.seed": {"type": "int", "low": 0, "high": 999, "step": 10},
        "model.pooling": {"type": "categorical", "choices": ["mean", "max"]},
    }
    response = submit(client, sampler="grid", max_trials=200, parameters=parameters)
    assert response.status_code == 201, response.json
    assert response.json["sampler"] == "grid" and response.json["max_trials"] == 200
