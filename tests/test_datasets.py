"""/api/v1/datasets: uploads of every format, statistics, bad inputs (nothing stored), reuse,
deletion, isolation, and job specs that reference datasets."""

import calendar
import datetime
import json
import re
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from shared.data.datasets import BUILTIN_DATASETS, DatasetError, check_task, load
from shared.data.formats import statistics
from shared.infra.models import Dataset
from shared.infra.storage import LocalStore
from tests.conftest import DATASETS, authed_client
from tests.helpers import SMALL_TSV, tiny_spec, upload

TSV = dict(format="tsv", text_column="sentence", label_column="label")


def stored(db, store):
    """(dataset rows, files in the store): what an upload may have left behind (in a directory
    store, staged files too)."""
    with db.session() as s:
        rows = s.scalar(select(func.count()).select_from(Dataset))
    files = [info.key.removeprefix("datasets/") for info in store.list("datasets/")]
    folder = store.local_path("datasets")
    if folder is not None:
        files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return rows, files


def test_tsv_upload_reports_statistics_and_is_reused(client, db, store):
    response = upload(client, SMALL_TSV, "small.tsv", **TSV)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["name"] == "small.tsv" and body["rows"] == 80 and body["format"] == "tsv"
    stats = body["stats"]
    assert stats["label_counts"] == {"neg": 40, "pos": 40}
    assert stats["tokens_per_row"]["p50"] == 4 and stats["tokens_per_row"]["max"] == 4
    assert stats["vocabulary_size"] == 2 + 2 + 40  # great, awful, film, number, 0..39
    assert store.get_bytes(f"datasets/{body['sha256']}") == SMALL_TSV
    assert client.get(body["url"]).json == body
    again = upload(client, SMALL_TSV, "copy.tsv", **TSV)
    assert again.status_code == 200 and again.json["id"] == body["id"]
    other_options = upload(client, SMALL_TSV, format="tsv", text_column="sentence")
    assert other_options.status_code == 201 and other_options.json["id"] != body["id"]
    assert stored(db, store) == (2, [body["sha256"]])  # one file for both


def test_jsonl_text_and_conll_uploads(client):
    jsonl = b'{"review": "fine", "stars": 5}\n{"review": "poor", "stars": 1}\n'
    body = upload(
        client, jsonl, "r.jsonl", format="jsonl", text_column="review", label_column="stars"
    ).json
    assert body["stats"]["label_counts"] == {"1": 1, "5": 1}
    text = upload(
        client, b"To be, or not to be.\nThat is the question.\n", "play.txt", format="text"
    ).json
    assert text["rows"] == 2 and text["stats"]["characters"] > 10
    conll = b"-DOCSTART- O\n\nJohn B-PER\nSmith I-PER\nvisited O\nOslo B-LOC\n\nHi O\n"
    body = upload(client, conll, "ner.txt", format="conll").json
    assert body["stats"]["sentences"] == 2 and body["stats"]["tokens"] == 5
    assert body["stats"]["entities"] == {"LOC": 1, "PER": 1}


BAD = [
    (
        "latin-1 bytes in UTF-8",
        b"sentence\tlabel\nna\xefve\tpos\n",
        TSV,
        400,
        "encoding",
        "line 2, byte 17",
    ),
    ("missing column", SMALL_TSV, {**TSV, "text_column": "review"}, 400, "text_column", "review"),
    ("empty file", b"", TSV, 400, "file", "empty"),
    ("ragged row", b"sentence\tlabel\ngood\tpos\textra\n", TSV, 400, "file", "line 2"),
    (
        "unparseable jsonl",
        b'{"t": "a", "l": 1}\n{"t": \n',
        dict(format="jsonl", text_column="t", label_column="l"),
        400,
        "file",
        "line 2",
    ),
    (
        "too many classes",
        b"t\tl\n" + b"".join(f"x\t{i}\n".encode() for i in range(5)),
        dict(format="tsv", text_column="t", label_column="l", max_classes=3),
        400,
        "label_column",
        "3",
    ),
    ("unknown format", SMALL_TSV, {**TSV, "format": "xlsx"}, 422, "format", ""),
    (
        "column for a text file",
        b"abc\n",
        dict(format="text", text_column="x"),
        422,
        "",
        "do not apply",
    ),
    ("bad conll tag", b"John X-PER\n", dict(format="conll"), 400, "tag_column", "line 1"),
    ("unknown encoding", SMALL_TSV, {**TSV, "encoding": "klingon"}, 400, "encoding", "klingon"),
]


@pytest.mark.parametrize(
    ("content", "options", "status", "path", "needle"),
    [b[1:] for b in BAD],
    ids=[b[0] for b in BAD],
)
def test_bad_uploads_say_why_and_store_nothing(
    client, db, store, content, options, status, path, needle
):
    response = upload(client, content, **options)
    assert response.status_code == status, response.json
    error = response.json["error"]
    assert needle in error["message"] or any(needle in f["message"] for f in error["fields"])
    assert path in [f["path"] for f in error["fields"]]
    assert stored(db, store) == (0, [])


def test_latin1_is_fine_when_declared(client):
    response = upload(client, b"sentence\tlabel\nna\xefve\tpos\n", **TSV, encoding="latin-1")
    assert response.status_code == 201 and response.json["rows"] == 1


def test_size_limit_is_413_with_the_limit(app, accounts, db, settings, store):
    from api import create_app

    small = create_app(replace(settings, max_dataset_bytes=1000), {"TESTING": True})
    response = upload(authed_client(small, accounts["alice"]), SMALL_TSV * 2, **TSV)
    assert response.status_code == 413 and "1,000-byte limit" in response.json["error"]["message"]
    assert stored(db, store) == (0, [])
    small.extensions["seqtrain"].db.dispose()


def test_not_multipart_and_no_file(client):
    assert client.post("/api/v1/datasets", json={"format": "tsv"}).status_code == 415
    response = client.post(
        "/api/v1/datasets", data={"format": "tsv"}, content_type="multipart/form-data"
    )
    assert response.status_code == 422 and response.json["error"]["fields"][0]["path"] == "file"


def test_isolation_and_references(app, client, accounts, db):
    mine = upload(client, SMALL_TSV, "mine.tsv", name="reviews", **TSV).json
    bob = authed_client(app, accounts["bob"])
    assert bob.get(mine["url"]).status_code == 403
    assert bob.delete(mine["url"]).status_code == 403
    assert bob.get("/api/v1/datasets").json["datasets"] == []
    assert authed_client(app, accounts["root"]).get(mine["url"]).status_code == 200
    spec = tiny_spec(resources={"queue": "nobody-listens"})
    # By name and by id for the owner; neither for bob.
    for reference in ("reviews", mine["reference"]):
        spec["data"]["dataset"] = reference
        assert client.post("/api/v1/jobs", json=spec).status_code == 201
        refused = bob.post("/api/v1/jobs", json=spec)
        assert (
            refused.status_code == 422
            and refused.json["error"]["fields"][0]["path"] == "data.dataset"
        )
    spec["data"]["dataset"] = "nothing-called-this"
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 422 and "no dataset named" in response.json["error"][
        "message"
    ] + str(response.json)


def test_task_and_format_must_fit(client):
    conll = upload(client, b"John B-PER\n", "n.txt", format="conll").json
    unlabeled = upload(client, SMALL_TSV, format="tsv", text_column="sentence").json
    for reference, needle in (
        (conll["reference"], "conll dataset"),
        (unlabeled["reference"], "no label column"),
        ("builtin:entities", "conll dataset"),
    ):
        spec = tiny_spec(data={"dataset": reference}, resources={"queue": "nobody-listens"})
        response = client.post("/api/v1/jobs", json=spec)
        assert (
            response.status_code == 422 and needle in response.json["error"]["fields"][0]["message"]
        )


# ---------------------------------------------------------------- seq2seq pairs

PAIRS = dict(source_column="de", target_column="en")
PAIR_TSV = b"de\ten\nGuten Morgen .\tGood morning .\nDanke\tThank you\n"


@pytest.mark.parametrize(
    ("fmt", "content"),
    [
        ("tsv", PAIR_TSV),
        ("csv", b'de,en\nGuten Morgen .,Good morning .\n"Danke", Thank you\n'),
        (
            "jsonl",
            b'{"de": "Guten Morgen .", "en": "Good morning ."}\n{"en": "Thank you", "de": "Danke"}\n',
        ),
    ],
)
def test_pair_uploads_report_pair_statistics(client, fmt, content):
    response = upload(client, content, f"greetings.{fmt}", format=fmt, **PAIRS)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["rows"] == 2 and body["options"] == {"encoding": "utf-8", **PAIRS}
    assert body["stats"] == {
        "rows": 2,
        "pairs": 2,
        "source_tokens_per_row": {"p50": 1, "p95": 3, "max": 3, "mean": 2.0},
        "target_tokens_per_row": {"p50": 2, "p95": 3, "max": 3, "mean": 2.5},
        "source_vocabulary_size": 4,  # Guten Morgen . Danke
        "target_vocabulary_size": 5,  # Good morning . Thank you
        "length_ratio": 1.25,
    }
    assert client.get(body["url"]).json == body


BAD_PAIRS = [
    (
        "empty target",
        b"de\ten\nEins\tOne\nZwei\t\nDrei\tThree\n",
        dict(format="tsv", **PAIRS),
        400,
        "target_column",
        "line 3: empty target in column 'en'",
    ),
    (
        "missing column",
        b"deutsch,en\nEins,One\n",
        dict(format="csv", **PAIRS),
        400,
        "source_column",
        "line 1: no column 'de' in the header; columns: 'deutsch', 'en'",
    ),
    (
        "missing field",
        b'{"de": "Eins", "en": "One"}\n{"de": "Zwei", "english": "Two"}\n',
        dict(format="jsonl", **PAIRS),
        400,
        "target_column",
        "line 2: no field 'en'; fields: 'de', 'english'",
    ),
    (
        "jsonl array",
        b'{"de": "Eins", "en": "One"}\n\n["Drei", "Three"]\n',
        dict(format="jsonl", **PAIRS),
        400,
        "file",
        "line 3: expected a JSON object, found an array",
    ),
    (
        "jsonl number",
        b'{"de": "Eins", "en": 1}\n',
        dict(format="jsonl", **PAIRS),
        400,
        "target_column",
        "line 1: field 'en' must be a non-empty string, found the number 1",
    ),
    (
        "source alone",
        PAIR_TSV,
        dict(format="tsv", source_column="de"),
        422,
        "target_column",
        "target_column is required with source_column",
    ),
    (
        "target alone",
        PAIR_TSV,
        dict(format="jsonl", target_column="en"),
        422,
        "source_column",
        "source_column is required with target_column",
    ),
    (
        "text and pair",
        PAIR_TSV,
        dict(format="tsv", text_column="de", **PAIRS),
        422,
        "text_column",
        "text_column does not go with source_column and target_column",
    ),
    (
        "label and pair",
        PAIR_TSV,
        dict(format="csv", label_column="en", **PAIRS),
        422,
        "label_column",
        "label_column does not go with source_column and target_column",
    ),
    (
        "no columns",
        PAIR_TSV,
        dict(format="tsv"),
        422,
        "text_column",
        "or source_column and target_column",
    ),
    ("pair for a text file", b"abc\n", dict(format="text", **PAIRS), 422, "", "do not apply"),
]


@pytest.mark.parametrize(
    ("content", "options", "status", "path", "needle"),
    [b[1:] for b in BAD_PAIRS],
    ids=[b[0] for b in BAD_PAIRS],
)
def test_bad_pair_uploads_name_the_field_and_line(
    client, db, store, content, options, status, path, needle
):
    response = upload(client, content, **options)
    assert response.status_code == status, response.json
    error = response.json["error"]
    assert [f["path"] for f in error["fields"]] == [path]
    assert needle in error["fields"][0]["message"]
    if status == 400:
        assert error["message"] == error["fields"][0]["message"]
    else:
        assert error["message"] == f"invalid dataset options: {path or '(body)'}"
    assert stored(db, store) == (0, [])


def test_openapi_documents_the_pair_options(client):
    body = client.get("/api/v1/openapi.json").json["paths"]["/api/v1/datasets"]["post"]
    schema = body["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"source_column", "target_column"} <= set(schema["properties"])


def test_pair_datasets_suit_seq2seq_only():
    dates = BUILTIN_DATASETS["dates"]
    check_task(dates, "seq2seq", "data.dataset", training=True)
    pairs = Dataset(id=7, format="tsv", options={"encoding": "utf-8", **PAIRS}, stats={})
    check_task(pairs, "seq2seq", "data.dataset", training=True)
    for task, needle in (
        ("classification", "with text_column and label_column"),
        ("language_modeling", "with text_column"),
    ):
        for resolved, name in ((pairs, "dataset:7"), (dates, "builtin:dates")):
            with pytest.raises(DatasetError) as caught:
                check_task(resolved, task, "data.dataset", training=True)
            assert caught.value.field == "data.dataset"
            assert caught.value.message.startswith(f"{name} holds source/target pairs (seq2seq)")
            assert needle in caught.value.message
    texts = Dataset(id=8, format="jsonl", options={"text_column": "t"}, stats={})
    for resolved, name in (
        (texts, "dataset:8"),
        (BUILTIN_DATASETS["sentiment"], "builtin:sentiment"),
    ):
        with pytest.raises(DatasetError, match="source_column and target_column") as caught:
            check_task(resolved, "seq2seq", "data.validation_dataset")
        assert caught.value.field == "data.validation_dataset"
        assert caught.value.message.startswith(f"{name} holds no source/target pairs")
    with pytest.raises(DatasetError, match="builtin:stories is a text dataset; seq2seq needs"):
        check_task(BUILTIN_DATASETS["stories"], "seq2seq", "data.dataset")


def test_a_classifier_refuses_an_uploaded_pair_dataset(client):
    pairs = upload(client, PAIR_TSV, "pairs.tsv", format="tsv", **PAIRS).json
    spec = tiny_spec(data={"dataset": pairs["reference"]}, resources={"queue": "nobody-listens"})
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 422, response.json
    field = response.json["error"]["fields"][0]
    assert field["path"] == "data.dataset" and "holds source/target pairs" in field["message"]


DATE_FORMS = [  # what builtin:dates writes, each with its parts
    r"(?P<month>[a-z]+) (?P<day>\d+)(st|nd|rd|th), (?P<year>\d{4})",  # march 3rd, 2021
    r"(?P<day>\d+) (?P<month>[A-Z][a-z]+) (?P<year>\d{4})",  # 3 March 2021
    r"the (?P<day>\d+)(st|nd|rd|th) of (?P<month>[a-z]+) (?P<year>\d{4})",
    r"(?P<day>\d\d)/(?P<month>\d\d)/(?P<year>\d{4})",  # 03/03/2021, day first
    r"(?P<month>[A-Z][a-z]+) (?P<day>\d+), (?P<year>\d{4})",  # March 3, 2021
    r"(?P<day>\d+)(st|nd|rd|th) (?P<month>[a-z]+) (?P<year>\d{4})",  # 3rd march 2021
]
MONTHS = [name.lower() for name in calendar.month_name]


def test_builtin_dates_are_deterministic_iso_pairs():
    dates = BUILTIN_DATASETS["dates"]
    assert dates.reference == "builtin:dates" and dates.format == "jsonl"
    assert dates.load() == dates.load()  # seeded: the same bytes every time
    parsed = load(dates, LocalStore("."))
    assert parsed.columns == ["source", "target"] and len(parsed.rows) == 2000
    assert parsed.rows[0] == json.loads(dates.load().decode().split("\n")[0])
    seen = set()
    for row in parsed.rows:
        form, found = next(
            (form, match)
            for form, pattern in enumerate(DATE_FORMS)
            if (match := re.fullmatch(pattern, row["source"]))
        )
        seen.add(form)
        month = found["month"]
        number = int(month) if month.isdigit() else MONTHS.index(month.lower())
        date = datetime.date(int(found["year"]), number, int(found["day"]))
        assert row["target"] == date.isoformat(), row
        assert datetime.date(1990, 1, 1) <= date <= datetime.date(2029, 12, 31)
    assert seen == set(range(len(DATE_FORMS)))
    stats = statistics(parsed)
    # A small vocabulary, so a tiny model learns it in a few epochs.
    assert stats["source_vocabulary_size"] < 600 and stats["source_tokens_per_row"]["max"] == 5


def test_delete_is_refused_while_a_job_uses_it(client, db, store):
    dataset = upload(client, SMALL_TSV, **TSV).json
    job = client.post(
        "/api/v1/jobs",
        json=tiny_spec(
            data={"dataset": dataset["reference"]}, resources={"queue": "nobody-listens"}
        ),
    ).json
    refused = client.delete(dataset["url"])
    assert refused.status_code == 409 and f"job {job['id']}" in refused.json["error"]["message"]
    client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert client.delete(dataset["url"]).status_code == 204
    assert client.get(dataset["url"]).status_code == 404
    assert stored(db, store) == (0, [])


# ---------------------------------------------------------------- the real data sets


def real(name):
    path = DATASETS / name
    if not path.exists():
        pytest.skip(f"{path} is not present (the shared data sets sit beside the checkout)")
    return path.read_bytes()


def test_sst2_statistics(client):
    train = upload(client, real("sst2/train.tsv"), "train.tsv", **TSV).json
    assert train["rows"] == 67_349 and train["stats"]["label_counts"] == {"0": 29_780, "1": 37_569}
    dev = upload(client, real("sst2/dev.tsv"), "dev.tsv", **TSV).json
    assert dev["rows"] == 872


def test_conll_and_shakespeare_statistics(client):
    conll = upload(client, real("conll2003/train.txt"), "train.txt", format="conll").json
    assert conll["stats"]["sentences"] == 14_041 and conll["stats"]["tokens"] == 203_621
    assert set(conll["stats"]["entities"]) == {"PER", "LOC", "ORG", "MISC"}
    text = upload(client, real("tinyshakespeare/input.txt"), "input.txt", format="text").json
    assert text["stats"]["characters"] == 65
