"""Sample translations (job_samples) on each backend: the fenced write, the newest-first
read, the cascade with the job, and GET /api/v1/jobs/<id>/samples."""

import pytest
from sqlalchemy import delete, func, select

from shared import jobs
from shared.infra.models import Job, JobSample
from shared.spec import parse_spec
from tests.conftest import authed_client
from tests.helpers import tiny_spec

ITEM = {"source": "march 3 2021", "reference": "2021-03-03", "hypothesis": "2021-03-30"}


def running_job(db, owner_id=None):
    job = jobs.create_job(db, parse_spec(tiny_spec()), owner_id=owner_id)
    assert jobs.claim(db, job.id, "w1", 60) == 1
    return job


def test_a_stale_attempt_cannot_write_samples(db):
    job = running_job(db)
    assert jobs.requeue(db, job.id, 1, "worker lost", "reaper")
    assert jobs.claim(db, job.id, "w2", 60) == 2
    with pytest.raises(jobs.Fenced):
        jobs.write_samples(db, job.id, 1, epoch=1, step=10, split="validation", items=[ITEM])
    jobs.write_samples(db, job.id, 2, epoch=1, step=10, split="validation", items=[ITEM])
    (sample,) = jobs.list_samples(db, job.id)
    assert (sample.attempt, sample.epoch, sample.step, sample.split) == (2, 1, 10, "validation")
    assert sample.items == [ITEM]


def test_a_finished_job_takes_no_samples(db):
    job = running_job(db)
    assert jobs.finish(db, job.id, 1, "succeeded", "done", "w1")
    with pytest.raises(jobs.Fenced):
        jobs.write_samples(db, job.id, 1, epoch=2, step=20, split="test", items=[ITEM])
    assert jobs.list_samples(db, job.id) == []


def test_samples_list_newest_epoch_first_and_keep_the_triples_and_signature(db):
    job, other = running_job(db), running_job(db)
    for epoch, step in ((1, 10), (3, 30), (2, 20)):
        item = {**ITEM, "hypothesis": f"epoch {epoch}"}
        jobs.write_samples(db, job.id, 1, epoch=epoch, step=step, split="validation", items=[item])
    # The test evaluation comes after the last validation, at the same epoch and step.
    extra = {**ITEM, "signature": "nrefs:1|case:mixed", "debug": "not kept"}
    jobs.write_samples(db, job.id, 1, epoch=3, step=30, split="test", items=[extra])
    jobs.write_samples(db, other.id, 1, epoch=9, step=90, split="validation", items=[ITEM])
    found = jobs.list_samples(db, job.id)
    assert [(s.epoch, s.split) for s in found] == [
        (3, "test"),
        (3, "validation"),
        (2, "validation"),
        (1, "validation"),
    ]
    # What the page shows, nothing more: the triple and the BLEU signature.
    assert found[0].items == [{**ITEM, "signature": "nrefs:1|case:mixed"}]
    assert found[1].items[0]["hypothesis"] == "epoch 3"
    assert jobs.get_job(db, job.id).epoch == 0  # samples are no progress report


def test_samples_are_of_validation_or_test(db):
    job = running_job(db)
    with pytest.raises(ValueError, match="validation or test"):
        jobs.write_samples(db, job.id, 1, epoch=1, step=1, split="train", items=[ITEM])  # type: ignore[arg-type]


def test_samples_go_with_their_job(db):
    job = running_job(db)
    jobs.write_samples(db, job.id, 1, epoch=1, step=1, split="validation", items=[ITEM])
    with db.session() as session:
        session.execute(delete(Job).where(Job.id == job.id))
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(JobSample)) == 0


def test_samples_route_is_for_the_owner(app, client, accounts, db):
    job = running_job(db, owner_id=accounts["alice"].user_id)
    jobs.write_samples(db, job.id, 1, epoch=1, step=5, split="validation", items=[ITEM])
    signed = {**ITEM, "signature": "nrefs:1|case:mixed"}
    jobs.write_samples(db, job.id, 1, epoch=2, step=10, split="validation", items=[signed])
    response = client.get(f"/api/v1/jobs/{job.id}/samples")
    assert response.status_code == 200, response.json
    assert [s["epoch"] for s in response.json["samples"]] == [2, 1]
    assert response.json["samples"][0] == {
        "attempt": 1,
        "epoch": 2,
        "step": 10,
        "split": "validation",
        "items": [signed],
    }
    # Samples stored without a signature answer null for it.
    assert response.json["samples"][1]["items"] == [{**ITEM, "signature": None}]
    other = authed_client(app, accounts["bob"]).get(f"/api/v1/jobs/{job.id}/samples")
    assert other.status_code == 403 and other.json["error"]["code"] == "forbidden"
    assert client.get("/api/v1/jobs/999999/samples").status_code == 404
    empty = running_job(db, owner_id=accounts["alice"].user_id)
    assert client.get(f"/api/v1/jobs/{empty.id}/samples").json == {"samples": []}
