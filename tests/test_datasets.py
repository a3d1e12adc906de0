"""/api/v1/datasets: uploads of every format, statistics, bad inputs (nothing stored), reuse,
deletion, isolation, and job specs that reference datasets."""

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from shared.infra.models import Dataset
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
