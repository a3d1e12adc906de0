"""/api/v1/models through the real app and real SQL (both backends): uploads of .zip and
.tar.gz, refusals that name the member and store nothing, reuse, isolation between users,
sharing by an admin, deletion (409 while a job uses the model), references from specs, the
models page, and `seqtrain models upload DIR` against a live API."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, update
from werkzeug.serving import make_server

from shared import jobs
from shared.hub import registry
from shared.infra.models import Job, PretrainedModel
from shared.spec import parse_spec
from tests.conftest import ROOT, authed_client
from tests.helpers import row_count, tiny_spec
from tests.hubfiles import (
    bert_dir,
    directory_members,
    gpt2_dir,
    targz_dir,
    upload_model,
    zip_dir,
    zip_members,
)
from tests.test_auth import form_csrf


@pytest.fixture(autouse=True)
def _empty_model_store(store):
    store.delete_prefix("models/")


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, Path]:
    bert = bert_dir(tmp_path / "bert")
    return {
        "zip": zip_dir(bert, tmp_path / "tiny-bert.zip"),
        "tar.gz": targz_dir(bert, tmp_path / "tiny-bert.tar.gz", root="tiny-bert"),
        "gpt2": zip_dir(gpt2_dir(tmp_path / "gpt2"), tmp_path / "tiny-gpt2.zip"),
        "bert_dir": bert,
    }


def stored_files(store) -> list[str]:
    return [info.key.removeprefix("models/") for info in store.list("models/")]


def test_upload_a_zip_then_get_it_and_reuse_it(client, db, store, archives):
    response = upload_model(client, archives["zip"])
    assert response.status_code == 201, response.json
    body = response.json
    digest = hashlib.sha256(archives["zip"].read_bytes()).hexdigest()
    assert body["name"] == "tiny-bert" and body["owner"] == "alice" and body["shared"] is False
    assert body["model_type"] == "bert" and body["architectures"] == ["BertModel"]
    assert (body["layers"], body["hidden_size"], body["heads"]) == (2, 32, 4)
    assert (body["vocab_size"], body["max_positions"], body["dtype"]) == (32, 64, "F32")
    assert body["sha256"] == digest and body["size"] == archives["zip"].stat().st_size
    assert body["format"] == "zip" and body["reference"] == f"model:{body['id']}"
    assert {f["path"] for f in body["files"]} >= {"config.json", "model.safetensors"}
    assert body["unpacked_bytes"] == sum(f["bytes"] for f in body["files"])
    assert response.headers["Location"] == body["url"]
    assert store.get_bytes(f"models/{digest}") == archives["zip"].read_bytes()
    assert client.get(body["url"]).json == body
    again = upload_model(client, archives["zip"], "copy.zip")
    assert again.status_code == 200 and again.json["id"] == body["id"]
    assert row_count(db, PretrainedModel) == 1 and stored_files(store) == [digest]


def test_upload_a_tar_gz_under_a_folder_with_a_name(client, archives):
    response = upload_model(client, archives["tar.gz"], name="my base")
    assert response.status_code == 201, response.json
    assert response.json["format"] == "tar.gz" and response.json["name"] == "my base"
    assert response.json["parameters"] == upload_model(client, archives["zip"]).json["parameters"]


def test_a_bad_archive_is_a_400_naming_the_member_and_stores_nothing(
    client, db, store, archives, tmp_path
):
    members = directory_members(archives["bert_dir"])
    members["pytorch_model.bin"] = b"\x80\x04pickle"
    response = upload_model(client, zip_members(tmp_path / "bad.zip", members))
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["code"] == "invalid_model" and error["message"].startswith("pytorch_model.bin:")
    assert error["fields"][0]["path"] == "file" and "pickle" in error["fields"][0]["message"]
    members.pop("pytorch_model.bin")
    members["config.json"] = json.dumps({"model_type": "not-a-real-type"}).encode()
    response = upload_model(client, zip_members(tmp_path / "unknown.zip", members))
    assert response.status_code == 400 and "not-a-real-type" in response.json["error"]["message"]
    assert row_count(db, PretrainedModel) == 0 and stored_files(store) == []
    models_dir = store.local_path("models")  # a directory store: no staged leftovers either
    assert models_dir is None or not models_dir.exists() or list(models_dir.iterdir()) == []


def test_request_problems(client, app, settings, archives):
    assert client.post("/api/v1/models", json={}).status_code == 415
    missing = client.post("/api/v1/models", data={"name": "x"}, content_type="multipart/form-data")
    assert missing.status_code == 422 and missing.json["error"]["fields"][0]["path"] == "file"
    bad_name = upload_model(client, archives["zip"], name="with:colon")
    assert bad_name.status_code == 422 and bad_name.json["error"]["fields"][0]["path"] == "name"
    bad_file_name = upload_model(client, archives["zip"], "a:b.zip")
    assert bad_file_name.status_code == 422, bad_file_name.json
    assert bad_file_name.json["error"]["fields"][0]["path"] == "name"
    app.extensions["seqtrain"].settings = replace(settings, max_model_bytes=1000)
    too_big = upload_model(client, archives["zip"])
    assert too_big.status_code == 413 and "1,000-byte limit" in too_big.json["error"]["message"]


def test_isolation_and_sharing(app, accounts, archives):
    alice, bob, root = (authed_client(app, accounts[n]) for n in ("alice", "bob", "root"))
    mine = upload_model(alice, archives["zip"]).json
    theirs = upload_model(bob, archives["gpt2"]).json
    assert [m["id"] for m in alice.get("/api/v1/models").json["models"]] == [mine["id"]]
    assert bob.get(mine["url"]).status_code == 404
    assert bob.delete(mine["url"]).status_code == 404
    assert bob.patch(mine["url"], json={"shared": True}).status_code == 404
    assert {m["id"] for m in root.get("/api/v1/models").json["models"]} == {
        mine["id"],
        theirs["id"],
    }
    assert alice.patch(mine["url"], json={"shared": True}).status_code == 403  # admins only
    assert root.patch(mine["url"], json={"shared": "maybe"}).status_code == 422
    shared = root.patch(mine["url"], json={"shared": True})
    assert shared.status_code == 200 and shared.json["shared"] is True
    assert bob.get(mine["url"]).json["shared"] is True
    assert [m["id"] for m in bob.get("/api/v1/models").json["models"]] == [theirs["id"], mine["id"]]
    assert bob.patch(mine["url"], json={"shared": False}).status_code == 403
    assert bob.delete(mine["url"]).status_code == 403  # visible, not bob's to delete
    assert root.patch(mine["url"], json={"shared": False}).json["shared"] is False
    assert bob.get(mine["url"]).status_code == 404


def test_list_pages_with_a_cursor(client, archives, tmp_path):
    ids = [upload_model(client, archives["zip"]).json["id"]]
    ids.append(upload_model(client, archives["tar.gz"]).json["id"])
    ids.append(upload_model(client, archives["gpt2"]).json["id"])
    first = client.get("/api/v1/models?limit=2").json
    assert [m["id"] for m in first["models"]] == ids[::-1][:2]
    rest = client.get(f"/api/v1/models?limit=2&cursor={first['next_cursor']}").json
    assert [m["id"] for m in rest["models"]] == [ids[0]] and rest["next_cursor"] is None
    assert client.get("/api/v1/models?limit=0").status_code == 400


def test_delete_is_refused_while_a_queued_job_uses_the_model(client, db, store, accounts, archives):
    model = upload_model(client, archives["zip"]).json
    job = jobs.create_job(
        db, parse_spec(tiny_spec(resources={"queue": "nobody"})), accounts["alice"].user_id
    )
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(base_model_id=model["id"]))
    refused = client.delete(model["url"])
    assert refused.status_code == 409
    assert f"1 job (yours: {job.id}) (queued" in refused.json["error"]["message"]
    # force does not override a queued or running job.
    assert client.delete(model["url"] + "?force=true").status_code == 409
    assert registry.job_base_model(db, job.id).id == model["id"]
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
    # A finished job's checkpoints need their base: deleting it takes force.
    kept = client.delete(model["url"])
    assert kept.status_code == 409 and "force" in kept.json["error"]["message"]
    assert client.delete(model["url"] + "?force=true").status_code == 204
    assert client.get(model["url"]).status_code == 404
    assert stored_files(store) == []
    with db.session() as session:
        assert session.scalar(select(Job.base_model_id).where(Job.id == job.id)) is None
    assert registry.job_base_model(db, job.id) is None


def test_one_file_for_two_owners_goes_with_the_last(app, store, accounts, archives):
    alice, bob = authed_client(app, accounts["alice"]), authed_client(app, accounts["bob"])
    first, second = (
        upload_model(alice, archives["zip"]).json,
        upload_model(bob, archives["zip"]).json,
    )
    assert first["id"] != second["id"] and stored_files(store) == [first["sha256"]]
    assert alice.delete(first["url"]).status_code == 204
    assert stored_files(store) == [first["sha256"]]
    assert bob.delete(second["url"]).status_code == 204
    assert stored_files(store) == []


def test_references_resolve_to_own_then_shared_models(app, db, accounts, archives):
    alice, bob = accounts["alice"], accounts["bob"]
    theirs = upload_model(authed_client(app, bob), archives["zip"], name="base").json
    with pytest.raises(registry.ModelError) as caught:
        registry.resolve_model(db, "base", alice.user_id, False, "model.pretrained")
    assert (
        caught.value.field == "model.pretrained" and "no model named 'base'" in caught.value.message
    )
    registry.set_shared(db, theirs["id"], True)
    assert registry.resolve_model(db, "base", alice.user_id, False, "f").id == theirs["id"]
    mine = upload_model(authed_client(app, alice), archives["gpt2"], name="base").json
    assert registry.resolve_model(db, "base", alice.user_id, False, "f").id == mine["id"]
    assert (
        registry.resolve_model(db, f"model:{theirs['id']}", alice.user_id, False, "f").id
        == theirs["id"]
    )
    registry.set_shared(db, theirs["id"], False)
    for reference in (f"model:{theirs['id']}", "model:0", "model:x", "model:99999"):
        with pytest.raises(registry.ModelError) as caught:
            registry.resolve_model(db, reference, alice.user_id, False, "model.pretrained")
        assert caught.value.field == "model.pretrained"
    assert (
        registry.resolve_model(db, f"model:{theirs['id']}", alice.user_id, True, "f").id
        == theirs["id"]
    )


def test_the_models_page_lists_what_the_viewer_can_see(app, anon, accounts, archives):
    upload_model(authed_client(app, accounts["alice"]), archives["zip"], name="<b>bold</b> base")
    upload_model(authed_client(app, accounts["bob"]), archives["gpt2"], name="bobs-private")
    assert anon.get("/models").status_code == 302
    csrf = form_csrf(anon.get("/login").data)
    anon.post("/login", data={"token": accounts["alice"].token, "csrf_token": csrf})
    page = anon.get("/models")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "&lt;b&gt;bold&lt;/b&gt; base" in html and "<b>bold</b>" not in html
    assert "bobs-private" not in html
    assert "2 × 32" in html and "bert" in html and 'href="/models"' in html


@pytest.fixture
def api_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def seqtrain(api_url, token, tmp_path, *args):
    env = dict(os.environ, SEQTRAIN_TOKEN=token, SEQTRAIN_VAR_DIR=str(tmp_path / "var"))
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--url", api_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env=env,
    )


def test_cli_uploads_a_directory_lists_shows_shares_and_deletes(
    api_url, accounts, archives, tmp_path
):
    directory = archives["bert_dir"]
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04")  # not a file the model needs
    (directory / "README.md").write_text("# tiny")
    alice, root = accounts["alice"].token, accounts["root"].token
    result = seqtrain(api_url, alice, tmp_path, "models", "upload", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert model["name"] == "bert" and model["format"] == "tar.gz" and model["layers"] == 2
    assert "pytorch_model.bin" not in {f["path"] for f in model["files"]}
    assert (
        "not uploaded (a model does not need them): README.md, pytorch_model.bin" in result.stderr
    )
    listed = seqtrain(api_url, alice, tmp_path, "models", "list")
    assert f"model:{model['id']}" in listed.stdout and "bert" in listed.stdout
    shown = json.loads(
        seqtrain(api_url, alice, tmp_path, "models", "show", str(model["id"])).stdout
    )
    assert shown["sha256"] == model["sha256"]
    refused = seqtrain(api_url, alice, tmp_path, "models", "share", str(model["id"]))
    assert refused.returncode == 1 and "only an admin" in refused.stderr
    shared = seqtrain(api_url, root, tmp_path, "models", "share", str(model["id"]), "--json")
    assert json.loads(shared.stdout)["shared"] is True
    archive = seqtrain(
        api_url, alice, tmp_path, "models", "upload", str(archives["gpt2"]), "--name", "g"
    )
    assert archive.returncode == 0 and "gpt2" in archive.stdout, archive.stderr
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not an archive")
    failed = seqtrain(api_url, alice, tmp_path, "models", "upload", str(bad))
    assert failed.returncode == 1 and "not a .zip or .tar.gz" in failed.stderr
    assert seqtrain(api_url, alice, tmp_path, "models", "delete", str(model["id"])).returncode == 0
    assert seqtrain(api_url, alice, tmp_path, "models", "show", str(model["id"])).returncode == 1
