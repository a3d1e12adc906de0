"""POST /api/v1/jobs/<id>/translate's contract short of a trained model (the request's limits,
the 409s), seq2seq decoding options of batch predictions, and `seqtrain translate`'s
arguments against a live API. A trained seq2seq job translating is in test_inference."""

import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import update
from werkzeug.serving import make_server

from cli.main import main as seqtrain
from shared.infra.models import Job
from tests.helpers import tiny_spec
from tests.test_auth import form_csrf


@pytest.fixture
def waiting_job(client):
    """A classification job of alice's that never runs (so it has no checkpoint)."""
    response = client.post("/api/v1/jobs", json=tiny_spec(resources={"queue": "nobody-listens"}))
    assert response.status_code == 201, response.json
    return response.json["id"]


@pytest.fixture
def seq2seq_job(db, waiting_job):
    # The route reads only the job's task: the row is made a seq2seq job directly.
    with db.session() as session:
        session.execute(update(Job).where(Job.id == waiting_job).values(task="seq2seq"))
    return waiting_job


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"texts": ["x"] * 65}, "texts"),
        ({"texts": []}, "texts"),
        ({"texts": [""]}, "texts[0]"),
        ({"texts": ["fine", "  \n "]}, "texts[1]"),
        ({"texts": ["x" * 2001]}, "texts[0]"),
        ({"texts": ["x"], "beam_size": 0}, "beam_size"),
        ({"texts": ["x"], "beam_size": 17}, "beam_size"),
        ({"texts": ["x"], "max_length": 0}, "max_length"),
        ({"texts": ["x"], "max_length": 513}, "max_length"),
        ({"texts": ["x"], "length_penalty": 5.5}, "length_penalty"),
        ({"texts": ["x"], "temperature": 1.0}, "temperature"),
        ({}, "texts"),
    ],
)
def test_translate_refuses_requests_beyond_its_limits(client, seq2seq_job, body, path):
    response = client.post(f"/api/v1/jobs/{seq2seq_job}/translate", json=body)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith("invalid translation request: ")
    assert [f["path"] for f in error["fields"]] == [path]


def test_translate_needs_a_seq2seq_job_with_a_checkpoint(app, client, accounts, waiting_job, db):
    from tests.conftest import authed_client

    body = {"texts": ["the third of march"], "beam_size": 16, "max_length": 512}
    wrong = client.post(f"/api/v1/jobs/{waiting_job}/translate", json=body)
    assert wrong.status_code == 409
    assert "classification job; this needs seq2seq" in wrong.json["error"]["message"]
    with db.session() as session:
        session.execute(update(Job).where(Job.id == waiting_job).values(task="seq2seq"))
    early = client.post(f"/api/v1/jobs/{waiting_job}/translate", json=body)
    assert early.status_code == 409 and "no checkpoint" in early.json["error"]["message"]
    # The job of another user: refused before anything is loaded.
    other = authed_client(app, accounts["bob"]).post(
        f"/api/v1/jobs/{waiting_job}/translate", json=body
    )
    assert other.status_code == 403
    assert client.post("/api/v1/jobs/999999/translate", json=body).status_code == 404


def test_the_job_page_and_openapi_know_translate(anon, accounts, client, seq2seq_job):
    doc = client.get("/api/v1/openapi.json").json
    post = doc["paths"]["/api/v1/jobs/{job_id}/translate"]["post"]
    assert set(post["responses"]) >= {"200", "409", "422"}
    assert "get" in doc["paths"]["/api/v1/jobs/{job_id}/samples"]
    csrf = form_csrf(anon.get("/login").data)
    anon.post("/login", data={"token": accounts["alice"].token, "csrf_token": csrf})
    page = anon.get(f"/jobs/{seq2seq_job}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-task="seq2seq"' in html and 'id="translate-beam"' in html
    assert 'id="translation-samples"' in html


def test_decoding_options_of_batch_predictions_are_for_seq2seq(client, waiting_job):
    body = {"dataset": "builtin:sentiment", "beam_size": 2}
    response = client.post(f"/api/v1/jobs/{waiting_job}/predictions", json=body)
    assert response.status_code == 422
    assert [f["path"] for f in response.json["error"]["fields"]] == ["beam_size"]
    too_wide = client.post(
        f"/api/v1/jobs/{waiting_job}/predictions", json={**body, "beam_size": 17}
    )
    assert too_wide.status_code == 422


def test_batch_predictions_of_other_tasks_refuse_pairs(client, waiting_job):
    """A classifier reads texts: a pair dataset is a 422 at once, not a failed output."""
    refused = client.post(
        f"/api/v1/jobs/{waiting_job}/predictions", json={"dataset": "builtin:dates"}
    )
    assert refused.status_code == 422, refused.json
    error = refused.json["error"]
    assert [f["path"] for f in error["fields"]] == ["dataset"]
    assert "holds source/target pairs; only a seq2seq job translates them" in error["message"]


def test_batch_predictions_of_seq2seq_read_pairs(client, seq2seq_job):
    # A classification dataset is not one a seq2seq job translates...
    refused = client.post(
        f"/api/v1/jobs/{seq2seq_job}/predictions", json={"dataset": "builtin:stories"}
    )
    assert (
        refused.status_code == 422
        and "seq2seq job predicts over" in (refused.json["error"]["message"])
    )
    # ...and a pair dataset needs a checkpoint, like any batch prediction.
    early = client.post(
        f"/api/v1/jobs/{seq2seq_job}/predictions",
        json={"dataset": "builtin:dates", "beam_size": 2, "format": "csv"},
    )
    assert early.status_code == 409 and "no checkpoint" in early.json["error"]["message"]


@pytest.fixture
def api_url(app, accounts, monkeypatch, tmp_path):
    monkeypatch.setenv("SEQTRAIN_TOKEN", accounts["alice"].token)
    monkeypatch.setenv("SEQTRAIN_VAR_DIR", str(tmp_path / "var"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["translate", "7"], "Missing argument 'TEXTS...'"),
        (["translate", "7", "x", "--beam-size", "0"], "--beam-size"),
        (["translate", "7", "x", "--beam-size", "17"], "--beam-size"),
        (["translate", "7", "x", "--max-length", "513"], "--max-length"),
        (["translate", "7", "x", "--length-penalty", "-1"], "--length-penalty"),
        (["translate", "seven", "x"], "JOB_ID"),
    ],
)
def test_cli_translate_checks_its_arguments(args, message):
    result = CliRunner().invoke(seqtrain, args)
    assert result.exit_code == 2 and message in result.output


def test_cli_translate_sends_the_options(api_url, waiting_job, seq2seq_job):
    runner = CliRunner()
    args = ["translate", str(seq2seq_job), "march 3", "12/25/1999", "--url", api_url]
    result = runner.invoke(seqtrain, [*args, "--beam-size", "3", "--max-length", "40"])
    assert result.exit_code == 1 and "no checkpoint" in result.output
    refused = runner.invoke(seqtrain, [*args, "--length-penalty", "6"])
    assert refused.exit_code == 2  # refused before any request
