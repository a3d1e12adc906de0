"""The status pages in a real browser: Debian's Chromium driven by Playwright, against the
real API served over HTTP, a real Celery worker, Redis and SQLite.

Chromium is /usr/bin/chromium (scripts/ensure-chromium installs it); Playwright never
downloads a browser. Without it the tests skip, unless SEQTRAIN_REQUIRE_BROWSER=1 (the test
script sets it), when they fail. Screenshots go to test-artifacts/screenshots/.
"""

import os
import re
import threading
import time
from pathlib import Path

import pytest
import yaml
from werkzeug.serving import make_server

from shared import jobs
from shared.jobs import workers
from shared.spec import parse_spec
from tests.conftest import ROOT
from tests.helpers import tiny_spec

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
WIDTHS = {"desktop": 1280, "phone": 390}
TERMINAL = {"succeeded", "failed", "cancelled", "pruned"}
XSS_NAME = "<img src=x onerror=alert(1)>"

# One backend is enough here: the API tests cover both.
pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.e2e,
    pytest.mark.browser,
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (scripts/ensure-chromium installs it)"
        if os.environ.get("SEQTRAIN_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def server(app):
    """The app over real HTTP (threaded: server-sent event streams hold a thread each)."""
    app.config["SEQTRAIN_STREAM_SECONDS"] = 20
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join()


class Page:
    """A browser tab signed in as one user, recording dialogs and console errors."""

    def __init__(self, browser, base_url, account, width=1280):
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.base_url = base_url
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Script errors and CSP violations; a failed fetch the page reports itself is not one.
        self.page.on(
            "console",
            lambda msg: (
                msg.type == "error"
                and not msg.text.startswith("Failed to load resource")
                and self.errors.append(msg.text)
            ),
        )
        self.page.set_default_timeout(20_000)
        self.goto("/login")
        self.page.fill("#token", account.token)
        self.page.click("button[type=submit]")
        # The jobs page writes its filters into the query string as soon as its script runs.
        self.page.wait_for_url(re.compile(re.escape(base_url) + r"/(\?.*)?$"))

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path):
        self.page.goto(self.base_url + path)

    def until(self, expression, timeout=20.0):
        """Poll a JavaScript expression from here until it is truthy (the pages' CSP forbids
        the eval that page.wait_for_function would need)."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)

    def text(self, selector):
        return (self.page.text_content(selector) or "").strip()

    def screenshot(self, name, width):
        self.page.set_viewport_size({"width": width, "height": 900})
        self.page.wait_for_timeout(300)  # charts resize on the resize event
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)

    def close(self):
        self.context.close()


@pytest.fixture
def open_page(browser, server):
    pages = []

    def opener(account, width=1280):
        tab = Page(browser, server, account, width)
        pages.append(tab)
        return tab

    yield opener
    for tab in pages:
        tab.close()


def submit_api(client, settings, name, **training):
    spec = tiny_spec(
        name=name,
        resources={"queue": settings.default_queue},
        model={"embedding_dim": 32, "hidden_size": 32},
        training={"batch_size": 16, "log_every_steps": 5, **training},
    )
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.json
    return response.json["id"]


def wait_status(client, job_id, statuses, timeout=90.0):
    deadline = time.monotonic() + timeout
    while (status := client.get(f"/api/v1/jobs/{job_id}").json["status"]) not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} still {status}"
        time.sleep(0.1)
    return status


def watch(tab, timeout=120.0):
    """Poll the job page until the job ends: the statuses shown, in order, and the loss
    chart's point counts seen while it showed `running`."""
    shown, points = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = tab.text("#job-status")
        if not shown or shown[-1] != status:
            shown.append(status)
        if status == "running":
            points.append(int(tab.page.get_attribute("#loss-chart", "data-points") or 0))
        if status in TERMINAL:
            return shown, points
        time.sleep(0.05)
    raise AssertionError(f"the page still shows {shown[-1]}")


def test_submit_from_the_form_and_watch_it_train(open_page, client, settings, accounts, db, worker):
    bob_job = jobs.create_job(
        db,
        parse_spec(tiny_spec(name="bob-private-job", resources={"queue": "nobody"})),
        accounts["bob"].user_id,
    )
    # A first job keeps the single worker busy, so the form's job is seen queued.
    blocker = submit_api(client, settings, "warm-up", epochs=3)
    tab = open_page(accounts["alice"])
    tab.goto("/submit")
    assert "quickstart" in tab.page.input_value("#spec")  # prefilled from the example

    # A bad spec: the error is shown beside the line of the field it concerns.
    tab.page.fill("#spec", "name: broken\nmodel:\n  type: cnn\n")
    tab.page.click("#submit-button")
    error = tab.page.wait_for_selector(".field-error[data-path='model.type']")
    assert "cnn" not in error.text_content() and "rnn" in error.text_content()
    assert tab.page.text_content(".bad-line code").strip() == "type: cnn"

    spec = tiny_spec(
        name="browser-run",
        resources={"queue": settings.default_queue},
        model={"embedding_dim": 32, "hidden_size": 32},
        # Small batches: about 2,500 steps of a few ms, so the run lasts longer than twice
        # a queued job's stream reconnect gap (2 s), and the page sees it running wherever
        # in the gap it starts.
        training={"epochs": 16, "batch_size": 4, "log_every_steps": 5},
        checkpoint={"every_epochs": 4, "keep_last": 1},
    )
    tab.page.fill("#spec", yaml.safe_dump(spec, sort_keys=False))
    tab.page.click("#submit-button")
    tab.page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    job_id = int(tab.page.url.rsplit("/", 1)[1])
    assert tab.text("#job-name") == "browser-run"

    shown, points = watch(tab)
    assert shown == ["queued", "running", "succeeded"], shown
    assert wait_status(client, blocker, TERMINAL) == "succeeded"
    assert points and max(points) > min(points), points  # the chart grew while training
    tab.until(
        "document.querySelector('#loss-chart').dataset.points > 20"
        " && document.querySelector('#metric-chart').dataset.points >= 16"
    )
    tab.until("document.querySelector('#log').textContent.includes('epoch 16/16')")
    assert "epoch 1/16" in tab.text("#log")
    tab.page.wait_for_selector("#timeline li[data-to=succeeded]")
    link = tab.page.wait_for_selector("#checkpoints a")
    assert link.text_content() == "download"
    assert link.get_attribute("href").startswith(f"/api/v1/jobs/{job_id}/checkpoints/")
    assert tab.text("#progress-label").startswith("100%")

    # A finished classifier answers from the box on its page.
    tab.page.fill("#predict-input", "a gripping , beautiful film\ndull and lifeless")
    tab.page.click("#predict-button")
    tab.page.wait_for_selector("#predict-output tbody tr >> nth=1")
    assert tab.page.locator("#predict-output tbody tr").count() == 2

    # The jobs page lists it, finished, and never bob's job.
    tab.goto("/")
    row = tab.page.wait_for_selector(f"tr[data-job-id='{job_id}']")
    assert "succeeded" in row.text_content() and "100%" in row.text_content()
    assert "bob-private-job" not in tab.page.content()
    workers.register(
        db,
        name="pytest-gpu",
        hostname="gpu-host",
        pid=4242,
        queues=[settings.default_queue],
        device_kind="cuda",
        device_count=1,
        devices=[{"name": "NVIDIA H100", "memory_bytes": 80 * 2**30}],
    )
    workers.set_current_job(db, "pytest-gpu", bob_job.id)

    for path, name in ((f"/jobs/{job_id}", "job"), ("/", "jobs"), ("/workers", "workers")):
        tab.goto(path)
        if name == "job":
            tab.until("document.querySelector('#loss-chart').dataset.points > 20")
        else:
            tab.page.wait_for_selector("tbody tr")
        for width in WIDTHS.values():
            tab.screenshot(name, width)
        page_text = tab.page.content()
        assert "bob-private-job" not in page_text and f"/jobs/{bob_job.id}" not in page_text
    assert "busy (another user" in tab.text("tr[data-worker='pytest-gpu']")
    assert not tab.errors and not tab.dialogs, (tab.errors, tab.dialogs)


def test_cancel_button_stops_a_running_job(open_page, client, settings, accounts, worker):
    from worker.procs import trainer_pids

    job_id = submit_api(client, settings, "long-run", epochs=300)
    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job_id}")
    tab.until(
        "document.querySelector('#job-status').textContent.trim() === 'running'"
        " && document.querySelector('#loss-chart').dataset.points > 0",
        timeout=60,
    )
    assert trainer_pids(job_id, settings.database_url), client.get(f"/api/v1/jobs/{job_id}").json
    tab.page.click("#cancel-button")
    tab.until(
        "document.querySelector('#job-status').textContent.trim() === 'cancelled'",
        timeout=30,
    )
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert job["status"] == "cancelled" and job["epoch"] < 300, job
    assert not trainer_pids(job_id, settings.database_url)
    tab.page.wait_for_selector("#retry-button:visible")
    assert tab.page.is_hidden("#cancel-button")
    tab.page.wait_for_selector("#timeline li[data-to=cancelled]")
    assert not tab.errors and not tab.dialogs, (tab.errors, tab.dialogs)


def test_a_hostile_job_name_is_text_and_runs_nothing(open_page, db, accounts):
    job = jobs.create_job(
        db,
        parse_spec(tiny_spec(name=XSS_NAME, resources={"queue": "nobody"})),
        accounts["alice"].user_id,
    )
    tab = open_page(accounts["alice"])
    tab.page.wait_for_selector(f"tr[data-job-id='{job.id}'] a.job-name")
    assert tab.text(f"tr[data-job-id='{job.id}'] a.job-name") == XSS_NAME
    tab.page.fill("input[name=q]", "onerror")
    tab.until("new URLSearchParams(location.search).get('q') === 'onerror'")
    tab.goto(f"/jobs/{job.id}")
    assert tab.text("#job-name") == XSS_NAME
    assert tab.page.title().startswith(XSS_NAME)
    tab.goto(f"/submit?from={job.id}")
    assert XSS_NAME in tab.page.input_value("#spec")
    for path in ("/", f"/jobs/{job.id}"):
        tab.goto(path)
        tab.page.wait_for_timeout(500)
        assert tab.page.locator("img").count() == 0
    assert tab.dialogs == [] and not tab.errors


def test_pages_never_show_another_users_job(open_page, db, accounts):
    bob = jobs.create_job(
        db,
        parse_spec(tiny_spec(name="bob-private-job", resources={"queue": "nobody"})),
        accounts["bob"].user_id,
    )
    mine = jobs.create_job(
        db,
        parse_spec(tiny_spec(name="alice-job", resources={"queue": "nobody"})),
        accounts["alice"].user_id,
    )
    tab = open_page(accounts["alice"], width=WIDTHS["phone"])
    tab.page.wait_for_selector(f"tr[data-job-id='{mine.id}']")
    assert tab.page.locator("tbody tr").count() == 1
    for path in (f"/jobs/{bob.id}", f"/submit?from={bob.id}", "/workers"):
        tab.goto(path)
        tab.page.wait_for_load_state("networkidle")
        assert "bob-private-job" not in tab.page.content()
    admin = open_page(accounts["root"])
    admin.page.wait_for_selector(f"tr[data-job-id='{bob.id}']")
    assert "bob-private-job" in admin.text(f"tr[data-job-id='{bob.id}']")


def test_the_job_page_polls_while_its_stream_is_refused(open_page, app, db, accounts):
    """With the user's streams at the cap (0 here: every stream is a 429), the job page
    reads the job's detail and metrics on an interval: a metric row and a status change
    written to SQL still show."""
    app.config["SEQTRAIN_MAX_STREAMS_PER_USER"] = 0
    job = jobs.create_job(
        db,
        parse_spec(tiny_spec(name="polled", resources={"queue": "nobody"})),
        accounts["alice"].user_id,
    )
    attempt = jobs.claim(db, job.id, "w", 600)
    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job.id}")
    tab.until("document.querySelector('#job').dataset.live === 'polling'")
    assert tab.text("#job-status") == "running"
    assert tab.page.get_attribute("#loss-chart", "data-points") in (None, "0")

    rows = [
        {"step": step, "epoch": 0, "split": "train", "name": "loss", "value": 1.0 / step}
        for step in (5, 10)
    ]
    jobs.write_metrics(db, job.id, attempt, rows, epoch=0, step=10)
    tab.until("document.querySelector('#loss-chart').dataset.points >= 2")
    assert tab.text("#fact-step") == "0 · 10"
    jobs.finish(db, job.id, attempt, "failed", "stopped from the test", "w")
    tab.until("document.querySelector('#job-status').textContent.trim() === 'failed'")
    tab.page.wait_for_selector("#timeline li[data-to=failed]")
    assert tab.page.get_attribute("#job", "data-live") == "ended"
    # Chromium reports each refused EventSource on the console; nothing else went wrong.
    assert all("EventSource" in error for error in tab.errors), tab.errors
    assert not tab.dialogs


def test_the_models_page_lists_an_uploaded_model(open_page, app, accounts, tmp_path):
    from tests.conftest import authed_client
    from tests.hubfiles import bert_dir, upload_model, zip_dir

    archive = zip_dir(bert_dir(tmp_path / "bert"), tmp_path / "tiny-bert.zip")
    model = upload_model(authed_client(app, accounts["alice"]), archive, name=XSS_NAME).json
    tab = open_page(accounts["alice"])
    tab.page.click("nav a[href='/models']")
    row = tab.page.wait_for_selector(f"tr[data-model-id='{model['id']}']")
    assert tab.text(f"tr[data-model-id='{model['id']}'] .model-name") == XSS_NAME
    assert "2 × 32" in (row.text_content() or "") and tab.page.locator("img").count() == 0
    assert not tab.errors and not tab.dialogs, (tab.errors, tab.dialogs)
