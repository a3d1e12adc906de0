"""A sweep trial's decision points in the loop (Reporter.pause_at_step / pause_at_epoch):
the trainer evaluates, checkpoints and raises Paused there; resumed from that checkpoint it
ends with the weights of a run never paused (deterministic CPU); and the paused -> queued
| pruned transitions in SQL, on both backends."""

from __future__ import annotations

import pytest
import torch

from shared import jobs
from shared.protocol import JobStatus
from shared.spec import parse_spec
from shared.zoo.checkpoints import load_checkpoint
from tests.helpers import tiny_spec
from tests.test_trainer import TASK_SPECS, Collect
from worker.pausing import Paused
from worker.trainer import Reporter, train


def collect(tmp_path, name, **pause) -> tuple[Collect, Reporter]:
    folder = tmp_path / name
    folder.mkdir()
    out = Collect(folder)
    report = out.reporter()
    return out, Reporter(report.log_metrics, report.save, **pause)


@pytest.mark.parametrize("task", ["classification", "tagging"])
def test_a_trial_paused_mid_epoch_resumes_to_the_weights_of_one_never_paused(tmp_path, task):
    torch.set_num_threads(1)
    spec = parse_spec(
        {
            **TASK_SPECS[task],
            "training": {**TASK_SPECS[task]["training"], "epochs": 3, "deterministic": True},
        }
    )
    straight, report = collect(tmp_path, "straight")
    result = train(spec, report)
    steps_per_epoch = result.step // 3
    pause_at = steps_per_epoch + steps_per_epoch // 2  # mid epoch 2

    first, report = collect(tmp_path, "first", pause_at_step=pause_at)
    with pytest.raises(Paused) as paused:
        train(spec, report)
    assert paused.value.step == pause_at
    saved = load_checkpoint(first.saved[-1])
    assert saved["step"] == pause_at and saved["next_batch"] > 0
    interim = [r for r in first.rows if r["split"] == "val" and r["step"] == pause_at]
    assert {r["name"] for r in interim} >= {"loss"}  # the evaluation at the decision point

    second, report = collect(tmp_path, "second")
    again = train(spec, report, resume=saved)
    assert again.step == result.step
    final_a, final_b = load_checkpoint(straight.saved[-1]), load_checkpoint(second.saved[-1])
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key
    # The epoch-end evaluations after the pause are those of the straight run.
    after = [
        (r["step"], r["name"], r["value"])
        for r in straight.rows
        if r["split"] == "val" and r["step"] > pause_at
    ]
    assert after == [
        (r["step"], r["name"], r["value"])
        for r in second.rows
        if r["split"] == "val" and r["step"] > pause_at
    ]


def test_a_trial_paused_after_an_epoch_checkpoints_that_epoch_and_resumes_exactly(tmp_path):
    torch.set_num_threads(1)
    spec = parse_spec(
        tiny_spec(
            model={"dropout": 0.3},
            training={"epochs": 3, "deterministic": True},
            checkpoint={"every_epochs": 5},  # no epoch checkpoint but the pause's
        )
    )
    straight, report = collect(tmp_path, "straight")
    train(spec, report)
    first, report = collect(tmp_path, "first", pause_at_epoch=1)
    with pytest.raises(Paused):
        train(spec, report)
    saved = load_checkpoint(first.saved[-1])
    assert saved["epoch"] == 1 and saved["next_batch"] == 0
    second, report = collect(tmp_path, "second", pause_at_epoch=2)
    with pytest.raises(Paused):
        train(spec, report, resume=saved)
    third, report = collect(tmp_path, "third")
    train(spec, report, resume=load_checkpoint(second.saved[-1]))
    final_a, final_b = load_checkpoint(straight.saved[-1]), load_checkpoint(third.saved[-1])
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key


def test_a_decision_point_at_or_past_the_end_trains_to_the_end(tmp_path):
    spec = parse_spec(tiny_spec(training={"epochs": 2}))
    _, report = collect(tmp_path, "a", pause_at_epoch=2)
    assert train(spec, report).epoch == 2
    _, report = collect(tmp_path, "b", pause_at_step=10**6)
    assert train(spec, report).epoch == 2


def queued_trial(db):
    job = jobs.create_job(db, parse_spec(tiny_spec(resources={"queue": "nobody"})), None)
    attempt = jobs.claim(db, job.id, "w", 60)
    return job.id, attempt


def test_pause_promote_and_prune_are_conditional_transitions(db):
    job_id, attempt = queued_trial(db)
    assert jobs.pause(db, job_id, attempt + 1, "stale", "w") is None  # fenced
    assert jobs.pause(db, job_id, attempt, "paused at step 5", "w") == JobStatus.PAUSED
    job = jobs.get_job(db, job_id)
    assert job.status == JobStatus.PAUSED and job.lease_owner is None
    assert jobs.promote(db, job_id, 15, None, "promoted", "sweeper")
    assert not jobs.promote(db, job_id, 45, None, "again", "sweeper")  # not paused any more
    job = jobs.get_job(db, job_id)
    assert (job.status, job.pause_at_step, job.max_attempts) == (JobStatus.QUEUED, 15, 4)
    second = jobs.claim(db, job_id, "w", 60)
    assert jobs.pause(db, job_id, second, "paused at step 15", "w") == JobStatus.PAUSED
    assert jobs.prune(db, job_id, "pruned at steps 15", "sweeper")
    job = jobs.get_job(db, job_id)
    assert job.status == JobStatus.PRUNED and job.finished_at is not None
    assert JobStatus.PRUNED.terminal and not JobStatus.PAUSED.terminal
    events = [(e.from_status, e.to_status) for e in jobs.job_events(db, job_id)]
    assert ("running", "paused") in events and ("paused", "queued") in events
    assert events[-1] == ("paused", "pruned")


def test_a_cancel_ends_a_paused_trial_at_once_and_wins_over_a_pause(db):
    job_id, attempt = queued_trial(db)
    assert jobs.pause(db, job_id, attempt, "paused", "w") == JobStatus.PAUSED
    assert jobs.request_cancel(db, job_id, "alice").status == JobStatus.CANCELLED
    assert not jobs.prune(db, job_id, "too late", "sweeper")
    other, attempt = queued_trial(db)
    jobs.request_cancel(db, other, "alice")  # running: flagged
    assert jobs.pause(db, other, attempt, "paused", "w") == JobStatus.CANCELLED
