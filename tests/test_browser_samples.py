"""A seq2seq job's page in a real browser (Chromium driven by Playwright, as in
tests/test_browser.py), short of a trained model: the Translate box's labels and the
"Sample translations" panel, newest epoch first, refreshed when the job's status changes,
every source, reference and hypothesis shown as text."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from shared import jobs
from shared.infra.models import Job
from shared.spec import parse_spec
from tests import test_browser
from tests.helpers import tiny_spec
from tests.test_browser import XSS_NAME

browser = test_browser.browser
server = test_browser.server
open_page = test_browser.open_page

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.e2e,
    pytest.mark.browser,
]


def test_sample_translations_show_as_text_newest_first(open_page, db, accounts):
    spec = parse_spec(tiny_spec(name="dates", resources={"queue": "nobody-listens"}))
    job = jobs.create_job(db, spec, accounts["alice"].user_id)
    # The page reads only the job's task: the row is made a seq2seq job directly.
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(task="seq2seq"))
    assert jobs.claim(db, job.id, "w1", 60) == 1
    first = {"source": XSS_NAME, "reference": "2021-03-03", "hypothesis": "<b>2021</b>"}
    jobs.write_samples(db, job.id, 1, epoch=1, step=10, split="validation", items=[first])

    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job.id}")
    assert tab.text("#predict-title") == "Translate"
    assert tab.page.is_visible("#translate-beam") is False  # no checkpoint yet: box hidden
    tab.until("document.querySelector('#translation-samples').dataset.count === '1'")
    assert tab.page.is_visible("#translation-samples") and not tab.page.is_visible(
        "#translation-samples-empty"
    )
    cells = tab.page.locator("#translation-samples-body td").all_text_contents()
    assert cells == [XSS_NAME, "2021-03-03", "<b>2021</b>"]
    assert (
        tab.page.locator("#translation-samples-body img, #translation-samples-body b").count() == 0
    )

    second = {"source": "march 4", "reference": "2021-03-04", "hypothesis": "2021-03-04"}
    jobs.write_samples(db, job.id, 1, epoch=2, step=20, split="validation", items=[second])
    assert jobs.finish(db, job.id, 1, "succeeded", "done", "w1")
    tab.until("document.querySelector('#translation-samples').dataset.count === '2'")
    headings = tab.page.locator("#translation-samples-body h3").all_text_contents()
    assert headings == ["Epoch 2 · step 20", "Epoch 1 · step 10"]
    assert tab.dialogs == [] and not tab.errors
