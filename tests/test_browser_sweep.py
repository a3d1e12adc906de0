"""The sweep pages in a real browser (Chromium driven by Playwright, as in
tests/test_browser.py): a sweep's state built in SQL with the store and the job state
machine (trials succeeded, pruned, paused, running, and one whose spec never ran), then the
list, the sweep's header, best trial, trials table and charts, live updates, cancel, and
"Clone the best as a job". User text (the sweep's name, a trial's parameter) stays text.
Screenshots go to test-artifacts/screenshots/ (sweep-*).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from shared import jobs
from shared.infra.models import Job
from shared.protocol import JobStatus
from shared.spec import parse_spec
from shared.sweeps import store
from shared.sweeps.spec import trial_spec, validate_sweep
from tests import test_browser
from tests.helpers import tiny_spec
from tests.test_browser import WIDTHS, XSS_NAME

browser = test_browser.browser
server = test_browser.server
open_page = test_browser.open_page

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.usefixtures("reconcilers_paused"),  # the tests make the trials
]
HOSTILE = "<img src=x onerror=alert(2)>"
STEPS_PER_EPOCH = 10
# number -> (lr, hidden_size, validation dataset, how the trial ends, objective value)
TRIALS = {
    0: (0.0003, 16, "builtin:sentiment", "succeeded", 0.71),
    1: (0.003, 48, "builtin:sentiment", "succeeded", 0.83),  # the best
    2: (0.005, 32, HOSTILE, "pruned", 0.55),
    3: (0.0001, 24, "builtin:sentiment", "pruned", 0.52),
    4: (0.001, 64, HOSTILE, "paused", 0.66),
    5: (0.0002, 40, "builtin:sentiment", "running", None),
}
INVALID = 6  # a sampled spec that did not validate: a failed trial without a job


def sweep_request(name: str) -> dict:
    return {
        "name": name,
        "spec": tiny_spec(resources={"queue": "nobody"}),
        "parameters": {
            "training.lr": {"type": "float", "low": 0.0001, "high": 0.01, "log": True},
            "model.hidden_size": {"type": "int", "low": 16, "high": 64, "step": 8},
            "data.validation_dataset": {
                "type": "categorical",
                "choices": ["builtin:sentiment", HOSTILE],
            },
        },
        "objective": {"metric": "val/accuracy", "direction": "maximize"},
        "max_trials": 8,
        "max_parallel": 2,
        "pruner": {"type": "asha", "unit": "epochs", "min_resource": 1, "reduction_factor": 3},
    }


def train(db, job_id: int, attempt: int, epoch: int, value: float | None) -> None:
    """An epoch's metrics by the attempt (the job's step and epoch move with them)."""
    step = epoch * STEPS_PER_EPOCH
    rows = [{"step": step, "epoch": epoch, "split": "train", "name": "loss", "value": 0.6}]
    if value is not None:
        rows.append(
            {"step": step, "epoch": epoch, "split": "val", "name": "accuracy", "value": value}
        )
    jobs.write_metrics(db, job_id, attempt, rows, epoch, step)


def build_sweep(db, owner_id: int, name: str = XSS_NAME) -> tuple[int, dict[int, int]]:
    """The sweep's id and trial number -> job id, every trial in the state TRIALS names."""
    sweep_spec, base = validate_sweep(sweep_request(name))
    sweep = store.create_sweep(db, sweep_spec, base, owner_id, {}, None)
    job_ids = {}
    for number, (lr, hidden, validation, end, value) in TRIALS.items():
        params = {
            "training.lr": lr,
            "model.hidden_size": hidden,
            "data.validation_dataset": validation,
        }
        spec = parse_spec(trial_spec(sweep.config["spec"], params, f"{name}-trial-{number}"))
        job_id = store.create_trial(db, sweep, number, number, params, spec, (None, 1))
        assert job_id is not None
        job_ids[number] = job_id
        attempt = jobs.claim(db, job_id, "test", 60)
        assert attempt is not None
        with db.session() as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(total_steps=3 * STEPS_PER_EPOCH)
            )
        epochs = 3 if end == "succeeded" else 1
        for epoch in range(1, epochs + 1):
            train(db, job_id, attempt, epoch, value)
        if end == "succeeded":
            assert jobs.finish(db, job_id, attempt, JobStatus.SUCCEEDED, "done", "test")
        elif end in ("pruned", "paused"):
            assert jobs.pause(db, job_id, attempt, "rung 1", "test") == JobStatus.PAUSED
            if end == "pruned":
                assert jobs.prune(db, job_id, "pruned at rung 1", "sweep")
        store.update_trial(
            db, sweep.id, number, value=value, status=end, reported=1, held=end == "paused"
        )
    assert store.record_invalid_trial(
        db, sweep.id, INVALID, INVALID, {"training.lr": 0.02}, f"spec invalid: {HOSTILE}"
    )
    store.set_best(db, sweep.id, (1, 0.83))
    return sweep.id, job_ids


def rows(tab) -> list[dict]:
    return tab.page.evaluate(
        """Array.from(document.querySelectorAll('#trials tbody tr')).map((row) => ({
            number: Number(row.dataset.trial), status: row.dataset.status,
            cells: Array.from(row.cells).map((cell) => cell.textContent.trim())}))"""
    )


def points(tab, selector: str) -> int:
    return tab.page.locator(f"{selector} circle.point").count()


def assert_no_injection(tab) -> None:
    assert tab.page.locator("img").count() == 0
    assert not tab.dialogs and not tab.errors, (tab.dialogs, tab.errors)


def test_the_sweep_page_shows_trials_best_and_charts_and_follows_the_sweep(open_page, db, accounts):
    sweep_id, job_ids = build_sweep(db, accounts["alice"].user_id)
    tab = open_page(accounts["alice"])

    # The list: the sweep, its trials done of the budget, the best value, linked.
    tab.goto("/sweeps")
    tab.page.wait_for_selector(f"#sweeps tbody tr[data-sweep-id='{sweep_id}']")
    row = f"#sweeps tr[data-sweep-id='{sweep_id}']"
    assert tab.text(f"{row} a") == XSS_NAME
    assert tab.text(f"{row} .trials-done") == "5 / 8"  # 2 succeeded, 2 pruned, 1 failed
    assert tab.text(f"{row} td:nth-child(4)") == "0.83"
    tab.page.click(f"{row} a")
    tab.page.wait_for_url(re.compile(rf"/sweeps/{sweep_id}$"))

    # The header.
    tab.page.wait_for_selector("#sweep[data-trials='7']")
    assert tab.text("#sweep-name") == XSS_NAME
    assert tab.text("#sweep-status") == "running"
    assert tab.text("#fact-objective") == "val/accuracy · maximize ↑"
    assert tab.text("#fact-sampler") == "tpe · seed 0"
    assert tab.text("#fact-pruner") == "asha (epochs from 1, ×3)"
    assert tab.text("#fact-trials").startswith("5 of 8 done")
    # 3 + 3 epochs (succeeded) + 1 each for the pruned, paused and running ones.
    assert tab.text("#fact-epochs") == "10"
    counts = tab.page.evaluate(
        """Object.fromEntries(Array.from(document.querySelectorAll('#sweep-counts .count'))
            .map((c) => [c.dataset.status, c.textContent.trim()]))"""
    )
    assert counts == {
        "running": "running 1",
        "paused": "paused 1",
        "succeeded": "succeeded 2",
        "pruned": "pruned 2",
        "failed": "failed 1",
    }

    # The best trial, linked to its job.
    assert tab.page.is_visible("#best")
    assert tab.text("#best-summary") == "Trial 1: val/accuracy 0.83"
    assert tab.page.get_attribute("#best-job", "href") == f"/jobs/{job_ids[1]}"
    assert "training.lr0.003" in tab.text("#best-params")

    # The trials table: one row per trial, its status badge, parameters, value, epochs.
    table = rows(tab)
    assert [r["number"] for r in table] == list(range(7))
    assert [r["status"] for r in table] == [
        "succeeded",
        "succeeded",
        "pruned",
        "pruned",
        "paused",
        "running",
        "failed",
    ]
    assert table[1]["cells"] == [
        "1",
        "succeeded",
        "0.003",
        "48",
        "builtin:sentiment",
        "0.83",
        "3 / 3",
        f"#{job_ids[1]}",
    ]
    assert table[4]["cells"][1] == "paused held"
    assert table[5]["cells"][5:7] == ["–", "1 / 3"]
    assert table[6]["cells"][-1] == "–" and HOSTILE in table[6]["cells"][1]
    assert tab.page.locator("#trials tbody tr[data-status=pruned] .status-pruned").count() == 2
    assert tab.page.locator("#trials tr.best-row").count() == 1

    # The charts: a point per trial with a value; pruned ones drawn hollow; the best ringed.
    assert points(tab, "#objective-chart") == 5
    assert tab.page.get_attribute("#objective-chart", "data-points") == "5"
    assert tab.page.locator("#objective-chart circle.pruned").count() == 2
    assert tab.page.locator("#objective-chart circle.best").get_attribute("data-trial") == "1"
    assert tab.page.locator("#objective-chart path.best-line").count() == 1
    figures = tab.page.evaluate(
        """Array.from(document.querySelectorAll('#param-charts figure')).map((f) => [
            f.dataset.param, f.dataset.scale, f.querySelectorAll('circle.point').length])"""
    )
    assert figures == [
        ["training.lr", "log", 5],
        ["model.hidden_size", "linear", 5],
        ["data.validation_dataset", "bands", 5],
    ]
    lr_ticks = tab.page.locator(
        "#param-charts figure[data-param='training.lr'] text.tick"
    ).all_text_contents()
    assert {"0.0001", "0.001", "0.01"} <= set(lr_ticks)  # powers of ten: a log axis
    bands = "#param-charts figure[data-param='data.validation_dataset']"
    assert tab.page.locator(f"{bands} rect.band").count() == 1  # every second band shaded

    # Live: the running trial finishes; the page follows within a poll or two.
    attempt = jobs.get_job(db, job_ids[5]).attempt
    train(db, job_ids[5], attempt, 3, 0.79)
    assert jobs.finish(db, job_ids[5], attempt, JobStatus.SUCCEEDED, "done", "test")
    store.update_trial(db, sweep_id, 5, value=0.79, status="succeeded")
    tab.until(
        "document.querySelector('#trials tr[data-trial=\"5\"]').dataset.status === 'succeeded'"
    )
    tab.until("document.querySelector('#objective-chart').dataset.points === '6'")
    assert tab.page.locator("#param-charts circle.point").count() == 18
    assert rows(tab)[5]["cells"][5:7] == ["0.79", "3 / 3"]

    # User text stays text.
    assert tab.text("h1 #sweep-name") == XSS_NAME
    assert rows(tab)[2]["cells"][4] == HOSTILE
    assert any(HOSTILE in t for t in tab.page.locator(f"{bands} text.tick").all_text_contents())
    assert_no_injection(tab)

    for width in WIDTHS.values():
        tab.screenshot("sweep", width)
        overflow = tab.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than a {width}px screen"
    tab.page.set_viewport_size({"width": 1280, "height": 900})

    # A trial's job page names its sweep and shows the paused badge.
    tab.goto(f"/jobs/{job_ids[4]}")
    tab.page.wait_for_selector("#job-sweep a")
    assert tab.text("#job-sweep") == f"trial 4 of sweep {sweep_id}"
    assert tab.page.get_attribute("#job-sweep a", "href") == f"/sweeps/{sweep_id}"
    assert tab.text("#job-status") == "paused"
    assert tab.page.is_visible("#cancel-button")
    tab.goto(f"/jobs/{job_ids[2]}")
    tab.page.wait_for_selector("#job-sweep a")
    assert tab.page.locator("#job-status.status-pruned").count() == 1
    assert_no_injection(tab)


def test_cancel_then_clone_the_best_as_a_job(open_page, db, accounts):
    sweep_id, job_ids = build_sweep(db, accounts["alice"].user_id, name="clone-me")
    tab = open_page(accounts["alice"])
    tab.goto(f"/sweeps/{sweep_id}")
    tab.page.wait_for_selector("#sweep[data-trials='7']")

    # Cancel: the paused trial is cancelled at once, the running one asked to stop.
    tab.page.click("#cancel-sweep")
    tab.until("document.querySelector('#cancel-sweep').disabled")
    tab.until(
        "document.querySelector('#trials tr[data-trial=\"4\"]').dataset.status === 'cancelled'"
    )
    assert "Cancel requested" in tab.text("#sweep-note")
    assert store.get_sweep(db, sweep_id).cancel_requested
    assert jobs.get_job(db, job_ids[4]).status == JobStatus.CANCELLED
    assert jobs.get_job(db, job_ids[5]).cancel_requested
    assert jobs.get_job(db, job_ids[1]).status == JobStatus.SUCCEEDED  # finished: untouched

    # Clone the best: a new job with the best trial's values, and its page.
    before = {job.id for job in jobs.list_jobs(db, limit=100)[0]}
    tab.page.click("#clone-best")
    tab.page.wait_for_url(re.compile(r"/jobs/(\d+)$"))
    new_id = int(tab.page.url.rsplit("/", 1)[1])
    assert new_id not in before and new_id not in job_ids.values()
    clone = jobs.get_job(db, new_id)
    assert clone.status == JobStatus.QUEUED
    assert clone.owner_id == accounts["alice"].user_id
    assert clone.name == "clone-me best (trial 1)"
    assert clone.spec["training"]["lr"] == 0.003
    assert clone.spec["model"]["hidden_size"] == 48
    assert clone.spec["data"]["validation_dataset"] == "builtin:sentiment"
    assert store.trial_of_job(db, new_id) is None  # an ordinary job, not a trial
    tab.page.wait_for_selector("#job-name")
    assert tab.text("#job-name") == "clone-me best (trial 1)"
    assert tab.page.locator("#job-sweep").count() == 0
    assert_no_injection(tab)


def test_another_user_gets_the_missing_page_and_an_empty_list(open_page, db, accounts):
    sweep_id, _ = build_sweep(db, accounts["alice"].user_id)
    tab = open_page(accounts["bob"])
    response = tab.page.goto(f"{tab.base_url}/sweeps/{sweep_id}")
    assert response is not None and response.status == 404
    assert tab.text("h1") == "Not found"
    assert f"Sweep {sweep_id}" in tab.text("main")
    assert XSS_NAME not in tab.page.content()
    tab.goto("/sweeps")
    tab.until("document.querySelector('#sweeps-note').textContent === 'No sweeps yet.'")
    assert tab.page.locator("#sweeps tbody tr").count() == 0
    response = tab.page.goto(f"{tab.base_url}/sweeps/{sweep_id + 1000}")
    assert response is not None and response.status == 404
    assert_no_injection(tab)
