"""Submit-time placement: a job no registered worker could hold is a 422 with the numbers;
an accepted job carries its estimate."""

from __future__ import annotations

from shared.jobs import workers
from tests.helpers import tiny_spec

GIB = 1 << 30


def register(db, name: str, count: int, memory: int, queues=("default",), kind="cpu") -> None:
    workers.register(
        db,
        name=name,
        hostname="host",
        pid=1,
        queues=list(queues),
        device_kind=kind,
        device_count=count,
        devices=[{"index": i, "name": kind, "memory_bytes": memory} for i in range(count)],
    )


def test_with_no_worker_registered_a_job_is_accepted_with_its_estimate(client):
    created = client.post("/api/v1/jobs", json=tiny_spec(resources={"devices": 8}))
    assert created.status_code == 201, created.json
    detail = client.get(created.json["url"]).json
    assert detail["devices"] == 8
    assert detail["estimate"]["parameters"] > 0
    assert "no worker has registered" in detail["estimate"]["placement"]


def test_more_devices_than_any_worker_has_is_refused(client, db):
    register(db, "w1", 2, 8 * GIB)
    refused = client.post("/api/v1/jobs", json=tiny_spec(resources={"devices": 4}))
    assert refused.status_code == 422
    field = refused.json["error"]["fields"][0]
    assert field["path"] == "resources.devices" and "at most 2" in field["message"]
    # Another queue's workers say nothing about this one.
    other = tiny_spec(resources={"devices": 4, "queue": "gpu"})
    assert client.post("/api/v1/jobs", json=other).status_code == 201


def test_a_job_too_big_for_every_device_is_refused_with_the_numbers(client, db):
    register(db, "small", 2, 2 * GIB)
    big = tiny_spec(
        data={"max_length": 512},
        model={"type": "lstm", "embedding_dim": 512, "hidden_size": 1024},
        training={"batch_size": 512},
    )
    refused = client.post("/api/v1/jobs", json=big)
    assert refused.status_code == 422
    field = refused.json["error"]["fields"][0]
    assert field["path"] == "training.batch_size"
    assert "GiB per cpu device" in field["message"] and "largest device" in field["message"]
    fits = client.post("/api/v1/jobs", json=tiny_spec(resources={"devices": 2}))
    assert fits.status_code == 201
    estimate = client.get(fits.json["url"]).json["estimate"]
    assert estimate["per_device_bytes"] < 2 * GIB and "1 registered worker" in estimate["placement"]


def test_a_multi_node_job_needs_that_many_fitting_workers_on_its_queue(client, db):
    register(db, "a", 2, 8 * GIB)
    register(db, "b", 1, 8 * GIB)
    refused = client.post("/api/v1/jobs", json=tiny_spec(resources={"devices": 2, "nodes": 2}))
    assert refused.status_code == 422
    field = refused.json["error"]["fields"][0]
    assert field["path"] == "resources.nodes" and "queue 'default' has 1" in field["message"]
    register(db, "c", 2, 8 * GIB)
    fits = client.post("/api/v1/jobs", json=tiny_spec(resources={"devices": 2, "nodes": 2}))
    assert fits.status_code == 201, fits.json


def test_the_worker_list_is_reused_briefly_and_a_registration_here_refreshes_it(db):
    from sqlalchemy import update

    from shared.infra.models import Worker
    from shared.jobs.routing import registered_workers

    register(db, "w1", 2, 8 * GIB)
    assert [w.device_count for w in registered_workers(db, 60)] == [2]
    # A change made by another process is seen once the copy is older than max_age...
    with db.session() as session:
        session.execute(update(Worker).values(device_count=4))
    assert [w.device_count for w in registered_workers(db, 60)] == [2]
    assert [w.device_count for w in registered_workers(db, 0)] == [4]
    # ...and a registration in this process refreshes it at once.
    register(db, "w2", 1, 8 * GIB)
    assert sorted(w.name for w in registered_workers(db, 60)) == ["w1", "w2"]
