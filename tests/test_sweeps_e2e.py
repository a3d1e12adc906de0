"""Sweeps with real workers: trials are ordinary jobs that pause at their rungs; the
controller (in the workers' reconcilers) reports to Optuna, promotes, prunes and finishes
the sweep; a promoted trial resumes to exactly the weights of a run never paused; and a
controller killed mid-sweep with Redis flushed creates no trial twice."""

from __future__ import annotations

import signal

import optuna
import pytest
import torch
from sqlalchemy import func, select

from shared import jobs
from shared.infra.cache import readable_file
from shared.infra.models import Job
from shared.infra.queue import redis_client
from shared.protocol import JobStatus
from shared.sweeps import store as sweeps
from shared.sweeps.spec import validate_sweep
from shared.sweeps.storage import optuna_storage
from shared.zoo.checkpoints import load_checkpoint
from tests.conftest import wait_until
from tests.helpers import tiny_spec
from tests.test_recovery import pool  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


def sweep_request(queue: str, **overrides) -> dict:
    spec = tiny_spec(
        resources={"queue": queue},
        training={"epochs": 3, "deterministic": True},
        checkpoint={"every_epochs": 1, "keep_last": 5},
    )
    return {
        "name": "tiny-sweep",
        "spec": spec,
        "parameters": {
            "training.lr": {"type": "categorical", "choices": [0.00001, 0.03]},
            "model.pooling": {"type": "categorical", "choices": ["mean", "max"]},
        },
        # The loss, not the accuracy: on this small set every trial's accuracy ties after
        # one epoch, and ties are all promoted.
        "objective": {"metric": "val/loss", "direction": "minimize"},
        "max_trials": 4,
        "max_parallel": 1,
        "sampler": "grid",
        "pruner": {"type": "asha", "unit": "epochs", "min_resource": 1, "reduction_factor": 3},
        **overrides,
    }


def create(db, owner_id: int, payload: dict):
    sweep, base = validate_sweep(payload)
    return sweeps.create_sweep(db, sweep, base, owner_id, {}, None)


def finished(db, sweep_id: int, timeout: float):
    return wait_until(
        lambda: (s := sweeps.get_sweep(db, sweep_id)).status != "running" and s,
        timeout,
        interval=0.5,
        message=f"sweep {sweep_id} to finish",
    )


def final_weights(db, artifacts, settings, job_id: int) -> dict[str, torch.Tensor]:
    ckpt = jobs.latest_checkpoint(db, job_id)
    assert ckpt is not None
    from shared.infra.cache import cache_for

    return load_checkpoint(readable_file(artifacts, cache_for(settings), ckpt.uri, ckpt.sha256))[
        "model"
    ]


def messages(db, job_id: int) -> list[str]:
    return [event.message for event in jobs.job_events(db, job_id)]


def test_a_sweep_runs_prunes_and_promotes_trials_that_resume_exactly(
    client,
    db,
    settings,
    store,
    accounts,
    pool,  # noqa: F811
):
    pool.start("sw-a")
    sweep = create(db, accounts["alice"].user_id, sweep_request(pool.queue))
    done = finished(db, sweep.id, 400)
    assert done.status == "succeeded", done.error
    trials = sweeps.trials(db, sweep.id)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert len({t.job_id for t in trials}) == 4
    assert {(t.params["training.lr"], t.params["model.pooling"]) for t in trials} == {
        (lr, pooling) for lr in (0.00001, 0.03) for pooling in ("mean", "max")
    }
    statuses = [t.status for t in trials]
    assert set(statuses) <= {JobStatus.SUCCEEDED, JobStatus.PRUNED}, statuses
    pruned = [t for t in trials if t.status == JobStatus.PRUNED]
    assert pruned, "asha pruned no trial"
    for trial in pruned:  # stopped at the first rung, its checkpoint kept
        job = jobs.get_job(db, trial.job_id)
        assert job.epoch == 1 and job.pause_at_epoch == 1
        assert jobs.latest_checkpoint(db, trial.job_id).epoch == 1
        assert any(m.startswith("pruned at epochs 1") for m in messages(db, trial.job_id))
    best = min((t for t in trials if t.status == JobStatus.SUCCEEDED), key=lambda t: t.value)
    assert (done.best_trial, done.best_value) == (best.number, best.value)
    losses = [v for _, _, v in sweeps.evaluations(db, best.job_id, "val/loss")]
    assert len(losses) == 3 and best.value == min(losses)  # its best evaluation
    # Optuna's study agrees: complete and pruned trials with the same values.
    study = optuna.load_study(
        study_name=done.study_name, storage=optuna_storage(settings.database_url)
    )
    states = {t.number: t.state for t in study.trials}
    for trial in trials:
        expected = (
            optuna.trial.TrialState.COMPLETE
            if trial.status == JobStatus.SUCCEEDED
            else optuna.trial.TrialState.PRUNED
        )
        assert states[trial.number] == expected
    assert study.best_trial.number == best.number and study.best_value == best.value

    # A promoted trial (paused after epoch 1, resumed) ends with the weights of the same
    # spec trained as one ordinary job, never paused.
    promoted = next(
        t
        for t in trials
        if t.status == JobStatus.SUCCEEDED
        and any(m.startswith("promoted") for m in messages(db, t.job_id))
    )
    assert jobs.get_job(db, promoted.job_id).attempt >= 2
    spec = dict(jobs.get_job(db, promoted.job_id).spec, name="the same, never paused")
    created = client.post("/api/v1/jobs", json=spec)
    assert created.status_code == 201, created.json
    plain = created.json["id"]
    wait_until(
        lambda: jobs.get_job(db, plain).status in (JobStatus.SUCCEEDED, JobStatus.FAILED),
        180,
        message="the plain job",
    )
    assert jobs.get_job(db, plain).status == JobStatus.SUCCEEDED
    paused = final_weights(db, store, settings, promoted.job_id)
    straight = final_weights(db, store, settings, plain)
    assert paused.keys() == straight.keys()
    for key, value in straight.items():
        assert torch.equal(value, paused[key]), key


def test_a_killed_controller_and_a_flushed_redis_create_no_trial_twice(
    db,
    settings,
    accounts,
    pool,  # noqa: F811
):
    first = pool.start("sw-k1")
    pool.start("sw-k2")
    payload = sweep_request(
        pool.queue,
        name="kill-sweep",
        max_trials=6,
        max_parallel=2,
        sampler="random",
        parameters={"training.lr": {"type": "float", "low": 0.001, "high": 0.05, "log": True}},
    )
    sweep = create(db, accounts["alice"].user_id, payload)
    wait_until(
        lambda: any(t.status == JobStatus.RUNNING for t in sweeps.trials(db, sweep.id)),
        120,
        message="a running trial",
    )
    # A controller that died between asking Optuna for a trial and making its job.
    study = optuna.load_study(
        study_name=sweeps.get_sweep(db, sweep.id).study_name,
        storage=optuna_storage(settings.database_url),
    )
    orphan = study.ask(
        {"training.lr": optuna.distributions.FloatDistribution(0.001, 0.05, log=True)}
    )
    # Kill a worker (its reconciler, and so a controller, dies with it) and flush Redis.
    first.send_signal(signal.SIGKILL)
    first.wait()
    redis_client(settings.redis_url).flushall()
    pool.start("sw-k3")
    done = finished(db, sweep.id, 600)
    assert done.status == "succeeded", done.error
    trials = sweeps.trials(db, sweep.id)
    assert [t.number for t in trials] == list(range(6))
    assert all(t.job_id is not None for t in trials)
    assert len({t.job_id for t in trials}) == 6
    if orphan.number < 6:  # adopted: its job trains the parameters Optuna stored
        adopted = next(t for t in trials if t.number == orphan.number)
        assert adopted.params == orphan.params
    with db.session() as session:
        names = dict(
            session.execute(
                select(Job.name, func.count())
                .where(Job.name.like("kill-sweep trial %"))
                .group_by(Job.name)
            ).all()
        )
    assert names == {f"kill-sweep trial {n}": 1 for n in range(6)}  # never a trial twice
    numbers = sorted(
        t.number
        for t in optuna.load_study(
            study_name=done.study_name, storage=optuna_storage(settings.database_url)
        ).trials
        if t.state == optuna.trial.TrialState.COMPLETE or t.state == optuna.trial.TrialState.PRUNED
    )
    assert numbers == list(range(6))
    assert all(JobStatus(jobs.get_job(db, t.job_id).status).terminal for t in trials)


def test_the_median_pruner_prunes_at_once_and_a_cancel_stops_every_trial(
    db,
    settings,
    accounts,
    pool,  # noqa: F811
):
    pool.start("sw-m")
    payload = sweep_request(
        pool.queue,
        name="median-sweep",
        pruner={"type": "median", "unit": "epochs", "min_resource": 1, "startup_trials": 1},
    )
    sweep = create(db, accounts["alice"].user_id, payload)
    done = finished(db, sweep.id, 400)
    assert done.status == "succeeded", done.error
    trials = sweeps.trials(db, sweep.id)
    pruned = [t for t in trials if t.status == JobStatus.PRUNED]
    assert pruned and not any(t.held for t in trials)
    for trial in pruned:  # pruned when it paused, not held for later
        events = messages(db, trial.job_id)
        assert events[-1] == "pruned at epochs 1 by the median pruner", events
    # A second sweep, cancelled while it runs: no trial is left running or queued.
    sweep = create(db, accounts["alice"].user_id, dict(payload, name="cancelled-sweep"))
    wait_until(
        lambda: any(t.status == JobStatus.RUNNING for t in sweeps.trials(db, sweep.id)),
        120,
        message="a running trial",
    )
    for job_id in sweeps.request_cancel(db, sweep.id):
        jobs.request_cancel(db, job_id, "alice")
    done = finished(db, sweep.id, 120)
    assert done.status == "cancelled"
    statuses = {t.status for t in sweeps.trials(db, sweep.id)}
    assert statuses <= {JobStatus.CANCELLED, JobStatus.SUCCEEDED, JobStatus.PRUNED}, statuses
    assert JobStatus.CANCELLED in statuses
