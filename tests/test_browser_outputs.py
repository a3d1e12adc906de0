"""Batch predictions and exports on the job page, in a real browser (Chromium driven by
Playwright, as in tests/test_browser.py): a job trained by the session's real Celery worker
on an uploaded dataset, then a prediction over that dataset and an export started from the
page's forms, followed to their downloads. Dataset names and API errors stay text.
Screenshots go to test-artifacts/screenshots/ (outputs-*).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pytest

from shared import jobs
from tests import test_browser
from tests.helpers import SMALL_TSV, upload
from tests.test_browser import XSS_NAME
from tests.test_browser_report import finished, screenshots, submit

browser = test_browser.browser
server = test_browser.server
open_page = test_browser.open_page

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.e2e,
    pytest.mark.browser,
]
ROWS = len(SMALL_TSV.decode().splitlines()) - 1


def row(kind, status):
    return f"#outputs-table tbody tr[data-kind='{kind}'][data-status='{status}']"


def fetched(tab, href):
    """The bytes of a link on the page, fetched with the tab's own session."""
    response = tab.context.request.get(tab.base_url + href)
    assert response.status == 200, response.text()
    return response.body()


def assert_text_only(tab):
    assert tab.page.locator("#outputs img, #outputs b, img").count() == 0
    assert not tab.dialogs and not tab.errors, (tab.dialogs, tab.errors)


def test_predict_a_dataset_and_export_from_the_job_page(
    open_page, client, settings, db, accounts, worker
):
    dataset = upload(
        client, SMALL_TSV, text_column="sentence", label_column="label", format="tsv", name=XSS_NAME
    )
    assert dataset.status_code == 201, dataset.json
    reference = dataset.json["reference"]
    job_id = submit(
        client, settings, "outputs",
        data={"dataset": reference, "max_length": 16},
        training={"epochs": 1, "batch_size": 16},
    )  # fmt: skip
    finished(client, job_id)
    # A queued output nobody will run: the page polls it and cancels it.
    checkpoint = jobs.best_checkpoint(db, job_id)
    assert checkpoint is not None
    stuck = jobs.create_output(
        db,
        job_id=job_id,
        owner_id=accounts["alice"].user_id,
        kind="predictions",
        params={"dataset": reference, "format": "jsonl"},
        queue=f"outputs-nobody-{uuid.uuid4().hex[:8]}",
        checkpoint_id=checkpoint.id,
        dataset_id=dataset.json["id"],
    )

    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job_id}")
    tab.page.wait_for_selector("#outputs:not([hidden]) " + row("predictions", "queued"))
    tab.until("document.querySelector('#outputs').dataset.polling === 'true'")
    option = tab.page.locator(f"#outputs-dataset option[value='{reference}']")
    assert option.text_content().startswith(XSS_NAME + " · tsv · ")
    assert_text_only(tab)

    tab.page.click(f"tr[data-output-id='{stuck.id}'] button.cancel-output")
    tab.page.wait_for_selector(f"tr[data-output-id='{stuck.id}'][data-status='cancelled']")
    tab.until("document.querySelector('#outputs').dataset.polling === 'false'")

    # A prediction over the dataset, from the form, to its download.
    tab.page.select_option("#outputs-dataset", reference)
    tab.page.click("#outputs-predict-button")
    done = tab.page.wait_for_selector(row("predictions", "succeeded"), timeout=180_000)
    assert tab.text(row("predictions", "succeeded") + " .rows") == f"{ROWS} of {ROWS} rows"
    assert "rows/s" in tab.text(row("predictions", "succeeded") + " .output-headline")
    href = done.query_selector("a.download").get_attribute("href")
    lines = fetched(tab, href).decode().splitlines()
    assert len(lines) == ROWS
    assert {json.loads(line)["label"] for line in lines} <= {"pos", "neg"}
    tab.until("document.querySelector('#outputs').dataset.polling === 'false'")

    # An export bundle with ONNX.
    assert tab.page.is_checked("#outputs-onnx")
    tab.page.click("#outputs-export-button")
    exported = tab.page.wait_for_selector(row("export", "succeeded"), timeout=180_000)
    assert "ONNX matches PyTorch" in tab.text(row("export", "succeeded") + " .output-headline")
    bundle = fetched(tab, exported.query_selector("a.download").get_attribute("href"))
    names = zipfile.ZipFile(io.BytesIO(bundle)).namelist()
    assert any(name.endswith("/model.onnx") for name in names), names

    # A reference that names nothing: the API's error, under the form.
    bad = "dataset:987654"
    expected = client.post(f"/api/v1/jobs/{job_id}/predictions", json={"dataset": bad})
    assert expected.status_code == 422, expected.json
    field = expected.json["error"]["fields"][0]
    tab.page.select_option("#outputs-dataset", "__other__")
    tab.page.fill("#outputs-reference", bad)
    tab.page.click("#outputs-predict-button")
    tab.page.wait_for_selector("#outputs-error:not([hidden])")
    assert tab.text("#outputs-error") == f"dataset: {field['message']}"
    assert tab.page.locator("#outputs-table tbody tr").count() == 3

    tab.page.locator("#outputs").scroll_into_view_if_needed()
    screenshots(tab, "outputs", row("export", "succeeded"))
    assert_text_only(tab)
