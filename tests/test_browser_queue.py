"""The queue on the status pages in a real browser (Chromium driven by Playwright, as in
tests/test_browser.py): a queued job's page says where it stands and why it waits, and
follows the queue as it moves; a running job asked to make room says so; the workers page
shows what each worker holds. The state is built in SQL with the job state machine (a
real worker would take the jobs before the page could be read); user text stays text.
Screenshots go to test-artifacts/screenshots/ (queue-*).
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from shared import jobs
from shared.infra.models import Job
from shared.jobs import nodes as node_rows
from shared.jobs import workers
from shared.spec import parse_spec
from tests import test_browser
from tests.helpers import register_worker, tiny_spec
from tests.test_browser import WIDTHS, XSS_NAME

browser = test_browser.browser
server = test_browser.server
open_page = test_browser.open_page

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.e2e,
    pytest.mark.browser,
]
# No real worker consumes this queue: the jobs stay where the test puts them.
QUEUE = "browser-queue"


def submit(db, owner_id, name, priority=50, nodes=1):
    resources = {"queue": QUEUE, "priority": priority, "nodes": nodes}
    spec = parse_spec(tiny_spec(name=name, resources=resources))
    return jobs.create_job(db, spec, owner_id).id


def register(db, name, job_id=None):
    register_worker(db, name, QUEUE)
    if job_id is not None:
        workers.set_current_job(db, name, job_id)


def check_clean(tab):
    assert tab.page.locator("img").count() == 0
    assert not tab.dialogs and not tab.errors, (tab.dialogs, tab.errors)


def test_a_queued_job_shows_its_place_and_follows_the_queue(open_page, db, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    register(db, "busy-box")
    running = submit(db, bob, "bob's run")
    assert jobs.claim(db, running, "busy-box", 600) == 1
    ahead = [submit(db, bob, f"bob high {i}", priority=75) for i in range(2)]
    mine = submit(db, alice, XSS_NAME)

    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{mine}")
    note = "#queue-note"
    # Rendered by the server at once, then kept up to date by the page's script.
    assert tab.text(note) == "Queued: position 3 — 2 jobs of higher priority ahead"
    assert tab.text("#fact-priority") == "50"
    assert tab.text("#job-name") == XSS_NAME
    for width in WIDTHS.values():
        tab.screenshot("queue-job", width)

    jobs.request_cancel(db, ahead[0], "bob")
    tab.until(f"document.querySelector('{note}').textContent.includes('position 2')")
    assert tab.text(note) == "Queued: position 2 — 1 job of higher priority ahead"
    jobs.request_cancel(db, ahead[1], "bob")
    tab.until(f"document.querySelector('{note}').textContent.includes('position 1')")
    # The only live worker is busy: the job is next.
    assert tab.text(note) == "Queued: position 1 — next: waiting for a free worker"

    # It starts: the note goes; then it is asked to make room for another job.
    assert jobs.claim(db, mine, "busy-box", 600) == 1
    tab.until("document.getElementById('job-status').textContent.trim() === 'running'")
    tab.until(f"document.querySelector('{note}').hidden")
    with db.session() as session:
        session.execute(update(Job).where(Job.id == mine).values(preempt_by=running))
    tab.until(f"!document.querySelector('{note}').hidden", timeout=30)
    assert tab.text(note) == (
        f"Asked to make room for job {running}: checkpointing, then back in the queue"
    )
    assert tab.page.get_attribute(f"{note} a", "href") == f"/jobs/{running}"
    check_clean(tab)


def test_the_workers_page_shows_what_each_worker_holds(open_page, db, accounts):
    alice, bob = accounts["alice"].user_id, accounts["bob"].user_id
    solo = submit(db, alice, XSS_NAME, priority=80)
    gang = submit(db, alice, "gang", nodes=2)
    secret = submit(db, bob, "bob's secret")
    for name in ("box-solo", "box-lead", "box-member", "box-bob", "box-idle"):
        register(db, name)
    assert jobs.claim(db, solo, "box-solo", 600) == 1
    workers.set_current_job(db, "box-solo", solo)
    attempt = jobs.claim(db, gang, "box-lead", 600)
    assert attempt == 1
    assert node_rows.reserve_first(db, gang, attempt, "box-lead", "127.0.0.1", 29500)
    assert node_rows.take_rank(db, gang, attempt, 2, "box-member") == 1
    assert jobs.claim(db, secret, "box-bob", 600) == 1
    workers.set_current_job(db, "box-bob", secret)

    tab = open_page(accounts["alice"])
    tab.goto("/workers")
    tab.page.wait_for_selector("#workers tr[data-worker='box-solo'] td.holder")

    def holds(worker):
        return tab.text(f"#workers tr[data-worker='{worker}'] td:nth-child(5)")

    solo_cell = holds("box-solo")
    assert solo_cell.startswith(f"job {solo} {XSS_NAME}")
    assert "alice · priority 80 · since " in solo_cell
    assert "node 0 of 2" in holds("box-lead") and f"job {gang} gang" in holds("box-lead")
    assert "node 1 of 2" in holds("box-member")
    assert holds("box-bob") == "busy (another user's job)" and "secret" not in tab.page.content()
    assert holds("box-idle") == "idle"
    link = f"#workers tr[data-worker='box-solo'] a[href='/jobs/{solo}']"
    assert tab.page.locator(link).count() == 1
    for width in WIDTHS.values():
        tab.screenshot("queue-workers", width)
    check_clean(tab)

    # An admin sees bob's job too, with its owner.
    admin = open_page(accounts["root"])
    admin.goto("/workers")
    admin.page.wait_for_selector("#workers tr[data-worker='box-bob'] td.holder")
    bob_cell = admin.text("#workers tr[data-worker='box-bob'] td:nth-child(5)")
    assert bob_cell.startswith(f"job {secret} bob's secret") and "bob · priority 50" in bob_cell
    check_clean(admin)
