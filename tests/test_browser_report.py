"""The evaluation report on the job page and the comparison page, in a real browser
(Chromium driven by Playwright, as in tests/test_browser.py): reports stored for a job the
test runs itself, then jobs trained by the session's real Celery worker, whose reports the
worker computes. User text (dataset texts, tokens, labels, job names) stays text.
Screenshots go to test-artifacts/screenshots/ (report-*, compare-*).
"""

from __future__ import annotations

import re

import pytest

from shared import jobs
from shared.spec import parse_spec
from tests import test_browser
from tests.helpers import SMALL_TSV, tiny_spec, upload
from tests.test_browser import TERMINAL, WIDTHS, XSS_NAME, wait_status

# The browser, the server and the signed-in tabs of the page tests.
browser = test_browser.browser
server = test_browser.server
open_page = test_browser.open_page

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.e2e,
    pytest.mark.browser,
]
HOSTILE_TEXT = "<img src=x onerror=alert(1)> a <b>bold</b> claim"


def cells(tab, table_id):
    """The heat map's counts as a matrix, read from the page's cells."""
    return tab.page.evaluate(
        f"""Array.from(document.querySelectorAll('#{table_id} tbody tr')).map((row) =>
            Array.from(row.querySelectorAll('td.heat')).map((td) => Number(td.dataset.count)))"""
    )


def assert_no_injection(tab):
    assert tab.page.locator("#report img, #report b, #compare img, #compare b").count() == 0
    assert tab.page.locator("img").count() == 0
    assert not tab.dialogs and not tab.errors, (tab.dialogs, tab.errors)


# ---------------------------------------------------------------- stored reports


def classification_body(labels):
    bins = [
        {"lower": i / 10, "upper": (i + 1) / 10, "count": 0, "confidence": None, "accuracy": None}
        for i in range(10)
    ]
    bins[6] |= {"count": 2, "confidence": 0.65, "accuracy": 0.5}
    bins[9] |= {"count": 3, "confidence": 0.95, "accuracy": 1.0}
    scores = {"precision": 0.8, "recall": 0.8, "f1": 0.8}
    section = {
        "examples": 5,
        "labels": labels,
        "accuracy": 0.8,
        "confusion": {"counts": [[2, 1], [0, 2]], "normalized": [[2 / 3, 1 / 3], [0.0, 1.0]]},
        "per_class": [
            {"label": labels[0], "precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3},
            {"label": labels[1], "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2},
        ],
        "macro": scores,
        "weighted": scores,
        "calibration": {"ece": 0.125, "bins": bins},
        "mistakes": [
            {"text": HOSTILE_TEXT, "label": labels[0], "prediction": labels[1], "probability": 0.7}
        ],
    }
    test = dict(section, examples=2, confusion={"counts": [[1, 0], [0, 1]], "normalized": None})
    return {
        "task": "classification",
        "checkpoint": {"id": 1, "step": 30, "epoch": 3},
        "summary": {"validation/accuracy": 0.8},
        "splits": {"validation": section, "test": test},
    }


def tagging_body():
    tokens = ["Ada", "<img", "src=x", "onerror=alert(1)>", "moved", "to", "Oslo", "."]
    entity = {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    return {
        "task": "tagging",
        "checkpoint": {"id": 1, "step": 10, "epoch": 1},
        "summary": {},
        "splits": {
            "validation": {
                "examples": 1,
                "tags": ["O", "B-PER", "B-LOC"],
                "token_accuracy": 0.875,
                "entities": {
                    "per_type": [{"type": "LOC", **entity}, {"type": "PER", **entity}],
                    "micro": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3},
                    "macro": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3},
                },
                "tag_confusion": {
                    "labels": ["O", "B-PER", "B-LOC"],
                    "counts": [[5, 1, 0], [0, 1, 0], [0, 0, 1]],
                },
                "missed": [],
                "spurious": [
                    {
                        "tokens": tokens,
                        "type": "PER",
                        "start": 1,
                        "end": 4,
                        "text": " ".join(tokens[1:4]),
                    }
                ],
            }
        },
    }


TAGGING_DATA = {"dataset": "builtin:entities", "tokenizer": {"kind": "word"}}


def stored_job(db, account, name, body, **sections):
    spec = parse_spec(tiny_spec(name=name, resources={"queue": "nobody"}, **sections))
    job = jobs.create_job(db, spec, account.user_id)
    attempt = jobs.claim(db, job.id, "test", 60)
    jobs.save_report(db, job.id, attempt, None, body)
    jobs.finish(db, job.id, attempt, "succeeded", "done", "test")
    return job.id


def test_a_stored_classification_report_is_drawn_and_its_text_stays_text(open_page, db, accounts):
    labels = ["neg <i>", "pos"]
    job_id = stored_job(db, accounts["alice"], XSS_NAME, classification_body(labels))
    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job_id}")
    tab.page.wait_for_selector("#report:not([hidden]) #confusion")
    assert cells(tab, "confusion") == [[2, 1], [0, 2]]
    assert tab.text("#confusion tbody tr:nth-child(1) th") == "neg <i>"
    tab.page.check("#confusion-normalized")
    assert tab.text("#confusion tbody tr:nth-child(1) td:nth-of-type(2)") == "33.3%"
    assert tab.page.locator(".per-class tbody tr").count() == 2
    assert "macro average" in tab.text(".per-class tfoot")
    assert tab.page.locator(".reliability rect.bar").count() == 2  # two bins hold examples
    assert tab.text("#report-ece") == "0.1250"
    assert tab.text(".mistakes tbody td.report-text") == HOSTILE_TEXT

    # The test split: its own matrix.
    assert tab.page.is_visible("#report-split")
    tab.page.select_option("#report-split", "test")
    tab.until("document.querySelector('#report').dataset.split === 'test'")
    assert cells(tab, "confusion") == [[1, 0], [0, 1]]
    tab.page.check("#confusion-normalized")  # normalized here from the counts
    assert tab.text("#confusion tbody tr:nth-child(2) td:nth-of-type(2)") == "100.0%"
    assert tab.text("#job-name") == XSS_NAME
    assert_no_injection(tab)


def test_a_stored_tagging_report_highlights_the_entity_span_as_text(open_page, db, accounts):
    job_id = stored_job(
        db, accounts["alice"], "tags", tagging_body(), task="tagging", data=TAGGING_DATA
    )
    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job_id}")
    tab.page.wait_for_selector("#report:not([hidden]) #entity-table")
    assert tab.page.locator("#entity-table tbody tr").count() == 2
    assert tab.text("#entity-table tbody tr[data-type=LOC] td:nth-child(4)") == "0.667"
    assert cells(tab, "tag-confusion") == [[5, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert tab.text("#spurious mark") == "<img src=x onerror=alert(1)>"
    assert tab.text("#spurious .entity-type") == "PER"
    assert tab.text("#spurious li").startswith("Ada <img src=x")
    assert tab.text("#missed") == "None."
    assert tab.page.is_hidden("#report-split-label")  # no test split
    assert_no_injection(tab)


def test_a_stored_language_model_report_draws_loss_by_position_and_samples(open_page, db, accounts):
    buckets = [{"start": 4 * i, "end": 4 * i + 4, "loss": 3.0 - 0.1 * i} for i in range(8)]
    samples = [
        {"temperature": t, "prompt": "Once <script>", "text": f" upon a <i>time</i> at {t}"}
        for t in (0.5, 1.0, 1.5)
    ]
    section = {"windows": 12, "loss": 2.5, "perplexity": 12.18, "loss_by_position": buckets}
    body = {
        "task": "language_modeling",
        "checkpoint": {"id": 1, "step": 10, "epoch": 1},
        "summary": {},
        "splits": {"validation": dict(section, samples=samples), "test": section},
    }
    spec = {"dataset": "builtin:stories", "tokenizer": {"kind": "char"}}
    job_id = stored_job(db, accounts["alice"], "lm", body, task="language_modeling", data=spec)
    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job_id}")
    tab.page.wait_for_selector("#report:not([hidden]) #position-chart canvas")
    assert tab.page.get_attribute("#position-chart", "data-points") == "8"
    assert tab.page.locator("#samples figure").count() == 3
    assert (
        tab.text("#samples figure[data-temperature='1.5'] pre")
        == "Once <script> upon a <i>time</i> at 1.5"
    )
    tab.page.select_option("#report-split", "test")  # the test split has no samples
    tab.until("document.querySelector('#report').dataset.split === 'test'")
    assert tab.page.locator("#samples").count() == 0
    assert tab.page.locator("#report script, #report i").count() == 0
    assert_no_injection(tab)


def test_a_failed_job_shows_no_report(open_page, db, accounts):
    job = jobs.create_job(
        db,
        parse_spec(tiny_spec(name="broke", resources={"queue": "nobody"})),
        accounts["alice"].user_id,
    )
    attempt = jobs.claim(db, job.id, "test", 60)
    jobs.finish(db, job.id, attempt, "failed", "boom", "test")
    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{job.id}")
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.is_hidden("#report")


# ---------------------------------------------------------------- trained jobs


def submit(client, settings, name, **sections):
    spec = tiny_spec(name=name, resources={"queue": settings.default_queue}, **sections)
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.json
    return response.json["id"]


def finished(client, job_id, timeout=180.0):
    assert wait_status(client, job_id, TERMINAL, timeout) == "succeeded", client.get(
        f"/api/v1/jobs/{job_id}"
    ).json
    response = client.get(f"/api/v1/jobs/{job_id}/report")
    assert response.status_code == 200, response.json
    return response.json["report"]


def screenshots(tab, name, selector):
    """Both widths; at the phone's width the page must not scroll sideways."""
    for width in WIDTHS.values():
        tab.screenshot(name, width)
        tab.page.wait_for_selector(selector)
        overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {width} px is {overflow} px too wide"


def test_trained_jobs_show_their_reports(open_page, client, settings, accounts, worker):
    # The same hostile text under both labels (its numbers never repeat): the model cannot
    # tell them apart, so some of them are among the validation mistakes.
    hostile = (
        b"sentence\tlabel\n"
        + b"".join(f"{HOSTILE_TEXT} {i}\t{('pos', 'neg')[i % 2]}\n".encode() for i in range(40))
        + SMALL_TSV.split(b"\n", 1)[1]
    )
    dataset = upload(client, hostile, text_column="sentence", label_column="label", format="tsv")
    assert dataset.status_code == 201, dataset.json
    classifier = submit(
        client, settings, XSS_NAME,
        data={"dataset": dataset.json["reference"], "max_length": 16},
        training={"epochs": 2, "batch_size": 16},
    )  # fmt: skip
    tagger = submit(
        client, settings, "entities",
        task="tagging", data=TAGGING_DATA,
        training={"epochs": 2, "batch_size": 16},
    )  # fmt: skip
    report = finished(client, classifier)
    section = report["splits"]["validation"]
    tab = open_page(accounts["alice"])
    tab.goto(f"/jobs/{classifier}")
    tab.page.wait_for_selector("#report:not([hidden]) #confusion")
    assert cells(tab, "confusion") == section["confusion"]["counts"]
    assert sum(map(sum, cells(tab, "confusion"))) == section["examples"]
    assert tab.page.locator(".per-class tbody tr").count() == len(section["labels"])
    assert tab.page.locator(".mistakes tbody tr").count() == len(section["mistakes"])
    for i, mistake in enumerate(section["mistakes"]):
        shown = tab.text(f".mistakes tbody tr:nth-child({i + 1}) td.report-text")
        assert shown == mistake["text"].strip()
    assert any(HOSTILE_TEXT in m["text"] for m in section["mistakes"]), section["mistakes"]
    tab.page.locator("#report").scroll_into_view_if_needed()
    screenshots(tab, "report", "#confusion")
    assert_no_injection(tab)

    tag_report = finished(client, tagger)["splits"]["validation"]
    tab.goto(f"/jobs/{tagger}")
    tab.page.wait_for_selector("#report:not([hidden]) #entity-table")
    per_type = tag_report["entities"]["per_type"]
    assert tab.page.locator("#entity-table tbody tr").count() == len(per_type)
    for entity in per_type:
        row = f"#entity-table tbody tr[data-type='{entity['type']}']"
        assert tab.text(row + " td:nth-child(4)") == f"{entity['f1']:.3f}"
        assert tab.text(row + " td:nth-child(5)") == str(entity["support"])
    assert cells(tab, "tag-confusion") == tag_report["tag_confusion"]["counts"]
    screenshots(tab, "report-tagging", "#entity-table")
    assert_no_injection(tab)


def test_compare_three_trained_jobs_from_the_jobs_page(
    open_page, client, settings, accounts, worker
):
    ids = [
        submit(client, settings, name, training={"epochs": 3, "lr": lr, "batch_size": 32})
        for name, lr in (("lr-0.003", 0.003), ("lr-0.01", 0.01), (XSS_NAME, 0.03))
    ]
    for job_id in ids:
        assert wait_status(client, job_id, TERMINAL, 180) == "succeeded"
    tab = open_page(accounts["alice"])
    for job_id in ids:
        tab.page.check(f"tr[data-job-id='{job_id}'] input.select-job")
    assert tab.text("#compare-button") == "Compare (3)"
    tab.page.wait_for_timeout(3500)  # a live refresh rebuilds the rows: the ticks stay
    assert all(tab.page.is_checked(f"tr[data-job-id='{i}'] input.select-job") for i in ids)
    tab.page.click("#compare-button")
    tab.page.wait_for_url(re.compile(r".*/compare\?jobs=" + ",".join(map(str, ids)) + "$"))
    tab.until("document.querySelector('#compare').dataset.ready === 'true'")

    assert tab.page.get_attribute(".chart[data-metric='val/accuracy']", "data-series") == "3"
    legend = tab.page.locator(
        "figure[data-metric='val/accuracy'] .u-legend .u-series"
    ).all_text_contents()
    assert sum(XSS_NAME in text for text in legend) == 1  # the hostile name, as text
    diff = tab.page.locator("#spec-diff tbody tr[data-path='training.lr'] td").all_text_contents()
    assert diff == ["0.003", "0.01", "0.03"]
    assert tab.page.locator("#spec-diff tbody tr[data-path='training.epochs']").count() == 0
    winners = tab.page.locator("#compare-metrics tr[data-metric='val/accuracy'] td.winner").count()
    assert winners == 1
    tab.page.select_option("#x-axis", "time")
    tab.until("new URLSearchParams(location.search).get('x') === 'time'")
    assert tab.page.get_attribute(".chart[data-metric='val/loss']", "data-series") == "3"
    tab.page.select_option("#x-axis", "step")
    screenshots(tab, "compare", ".chart[data-metric='val/accuracy']")
    assert_no_injection(tab)

    # The link is the page: another tab opens the same comparison; bob may not.
    bob = open_page(accounts["bob"])
    bob.goto(f"/compare?jobs={ids[0]},{ids[1]}")
    bob.page.wait_for_selector("#compare-error:not([hidden])")
    assert "not found" in bob.text("#compare-error")
    assert "lr-0.003" not in bob.page.content()
