"""Authentication and isolation: the auth matrix, page sessions with CSRF, limits, headers."""

import logging
import re
import uuid
from dataclasses import replace

import pytest

from shared import jobs
from shared.auth import authenticate, create_token, create_user, ensure_admin, revoke_token
from shared.spec import parse_spec
from tests.helpers import tiny_spec

IDENTITIES = ["none", "bad", "other", "owner", "admin"]


def headers_for(identity, accounts):
    return {
        "none": {},
        "bad": {"Authorization": "Bearer st_not-a-real-token"},
        "other": accounts["bob"].headers,
        "owner": accounts["alice"].headers,
        "admin": accounts["root"].headers,
    }[identity]


@pytest.fixture
def alice_job(db, store, accounts):
    """A queued job of alice's with one checkpoint file in the store."""
    job = jobs.create_job(
        db, parse_spec(tiny_spec(name="alice-secret-job")), accounts["alice"].user_id
    )
    jobs.claim(db, job.id, "w", 60)
    key = f"jobs/{job.id}/checkpoints/step-1.safetensors"
    store.put_bytes(b"checkpoint bytes", key)
    jobs.add_checkpoint(
        db, job.id, 1, step=1, epoch=1, uri=key, sha256="0" * 64, size=16, metrics={}, keep_last=5
    )
    jobs.requeue(db, job.id, 1, "back to the queue", "w")  # queued again, so cancel is allowed
    ckpt = jobs.list_checkpoints(db, job.id)[0]
    return job.id, ckpt.id


OBJECT_ROUTES = [
    ("GET", "/api/v1/jobs/{job}", 200),
    ("GET", "/api/v1/jobs/{job}/metrics", 200),
    ("GET", "/api/v1/jobs/{job}/checkpoints", 200),
    ("GET", "/api/v1/jobs/{job}/checkpoints/{ckpt}/download", 200),
    ("POST", "/api/v1/jobs/{job}/cancel", 202),
]


@pytest.mark.parametrize(("method", "template", "ok"), OBJECT_ROUTES)
@pytest.mark.parametrize("identity", IDENTITIES)
def test_object_routes(anon, accounts, alice_job, method, template, ok, identity):
    job_id, ckpt_id = alice_job
    path = template.format(job=job_id, ckpt=ckpt_id)
    response = anon.open(path, method=method, headers=headers_for(identity, accounts))
    expected = {"none": 401, "bad": 401, "other": 403, "owner": ok, "admin": ok}[identity]
    assert response.status_code == expected, response.data
    if expected >= 400:
        assert b"alice-secret-job" not in response.data and b"checkpoint bytes" not in response.data
        assert response.json["error"]["code"] in {"unauthorized", "forbidden"}
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("identity", IDENTITIES)
def test_list_shows_only_what_the_caller_may_see(anon, accounts, alice_job, db, identity):
    bob_job = jobs.create_job(db, parse_spec(tiny_spec(name="bob-job")), accounts["bob"].user_id)
    response = anon.get("/api/v1/jobs", headers=headers_for(identity, accounts))
    if identity in ("none", "bad"):
        assert response.status_code == 401 and b"alice-secret-job" not in response.data
        return
    ids = {j["id"] for j in response.json["jobs"]}
    expected = {"other": {bob_job.id}, "owner": {alice_job[0]}, "admin": {alice_job[0], bob_job.id}}
    assert ids == expected[identity]


@pytest.mark.parametrize("identity", IDENTITIES)
def test_submit_records_the_owner(anon, accounts, db, identity):
    response = anon.post(
        "/api/v1/jobs",
        json=tiny_spec(resources={"queue": "nobody-listens"}),
        headers=headers_for(identity, accounts),
    )
    if identity in ("none", "bad"):
        assert response.status_code == 401
        assert jobs.list_jobs(db)[0] == []
        return
    assert response.status_code == 201
    owner = {"other": "bob", "owner": "alice", "admin": "root"}[identity]
    assert jobs.get_job(db, response.json["id"]).owner_id == accounts[owner].user_id


def test_revoked_token_and_malformed_headers(anon, accounts, db):
    assert anon.get("/api/v1/jobs", headers=accounts["alice"].headers).status_code == 200
    token_id = authenticate(db, accounts["alice"].token).token_id
    assert revoke_token(db, token_id)
    assert anon.get("/api/v1/jobs", headers=accounts["alice"].headers).status_code == 401
    for header in ("Basic abc", "Bearer", "Bearer ", accounts["bob"].token):
        response = anon.get("/api/v1/jobs", headers={"Authorization": header})
        assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"


def test_only_a_hash_of_the_token_is_stored(db):
    create_user(db, "dora")
    row, token = create_token(db, "dora")
    assert token not in (row.token_hash, row.prefix) and len(row.token_hash) == 64
    assert token.startswith(row.prefix)


def test_open_routes_need_no_token(anon):
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/api/v1/openapi.json").status_code == 200
    assert anon.get("/api/v1/docs").status_code == 200


# ---------------------------------------------------------------- pages: session + CSRF


def form_csrf(html: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', html).group(1).decode()


def test_login_session_csrf_and_logout(anon, accounts):
    assert anon.get("/").status_code == 302  # not signed in -> /login
    csrf = form_csrf(anon.get("/login").data)
    token = accounts["alice"].token
    assert anon.post("/login", data={"token": token, "csrf_token": "forged"}).status_code == 403
    bad = anon.post("/login", data={"token": "st_wrong", "csrf_token": csrf})
    assert bad.status_code == 401 and b"Unknown or revoked token" in bad.data
    ok = anon.post("/login", data={"token": token, "csrf_token": csrf})
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    cookie = anon.get_cookie("seqtrain_session")
    assert cookie.http_only and cookie.same_site == "Lax"
    home = anon.get("/")
    assert home.status_code == 200 and b"alice" in home.data

    # The session authenticates the API; its writes need the CSRF token as a header.
    assert anon.get("/api/v1/jobs").status_code == 200
    spec = tiny_spec(resources={"queue": "nobody-listens"})
    refused = anon.post("/api/v1/jobs", json=spec)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_failed"
    session_csrf = form_csrf(home.data)
    assert session_csrf != csrf  # a fresh session on sign-in
    assert (
        anon.post("/api/v1/jobs", json=spec, headers={"X-CSRF-Token": session_csrf}).status_code
        == 201
    )

    assert anon.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert anon.post("/logout", data={"csrf_token": session_csrf}).status_code == 302
    assert anon.get("/api/v1/jobs").status_code == 401


# ---------------------------------------------------------------- hardening


def test_failed_auth_is_rate_limited(settings, accounts, redis_url):
    import redis as redis_lib

    from api import create_app

    redis_lib.Redis.from_url(redis_url).delete(
        "seqtrain:authfail:10.9.8.7", "seqtrain:authfail:10.9.8.6"
    )
    app = create_app(replace(settings, auth_failure_limit=3), {"TESTING": True})
    client = app.test_client()
    env = {"REMOTE_ADDR": "10.9.8.7"}
    guesses = [f"Bearer st_guess-{uuid.uuid4().hex}" for _ in range(5)]
    for guess in guesses[:3]:
        response = client.get("/api/v1/jobs", headers={"Authorization": guess}, environ_base=env)
        assert response.status_code == 401
    blocked = client.get("/api/v1/jobs", headers={"Authorization": guesses[3]}, environ_base=env)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert blocked.json["error"]["code"] == "too_many_requests"
    # A valid token from the same address is not refused for the others' failures.
    valid = client.get("/api/v1/jobs", headers=accounts["alice"].headers, environ_base=env)
    assert valid.status_code == 200
    other_client = client.get(
        "/api/v1/jobs",
        headers={"Authorization": guesses[4]},
        environ_base={"REMOTE_ADDR": "10.9.8.6"},
    )
    assert other_client.status_code == 401  # another address is not affected
    csrf = form_csrf(client.get("/login", environ_base=env).data)
    page = client.post("/login", data={"token": "st_wrong", "csrf_token": csrf}, environ_base=env)
    assert page.status_code == 429 and int(page.headers["Retry-After"]) > 0
    page = client.post(
        "/login", data={"token": accounts["alice"].token, "csrf_token": csrf}, environ_base=env
    )
    assert page.status_code == 302
    app.extensions["seqtrain"].db.dispose()


def test_security_headers_on_pages_and_api(anon, client):
    for response in (anon.get("/login"), anon.get("/api/v1/docs"), client.get("/api/v1/jobs")):
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"


def test_body_size_and_content_type_limits(client, settings):
    huge = {"name": "x" * (settings.max_request_bytes + 10)}
    response = client.post("/api/v1/jobs", json=huge)
    assert (
        response.status_code == 413 and response.json["error"]["code"] == "request_entity_too_large"
    )
    response = client.post("/api/v1/jobs", data="name: x", content_type="application/x-yaml")
    assert response.status_code == 415


def test_tokens_never_reach_the_logs(anon, accounts, caplog):
    caplog.set_level(logging.DEBUG)
    anon.get("/api/v1/jobs", headers=accounts["alice"].headers)
    anon.get("/api/v1/jobs", headers={"Authorization": "Bearer st_secret-guess-123"})
    csrf = form_csrf(anon.get("/login").data)
    anon.post("/login", data={"token": accounts["bob"].token, "csrf_token": csrf})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (accounts["alice"].token, accounts["bob"].token, "st_secret-guess-123"):
        assert secret not in logged


def test_first_start_creates_an_admin_and_a_private_token_file(db, tmp_path, settings):
    from cli.serve import ensure_dev_token

    note = ensure_dev_token(settings.database_url, tmp_path)
    token_file = tmp_path / "dev-token"
    token = token_file.read_text().strip()
    assert token in note and token_file.stat().st_mode & 0o777 == 0o600
    principal = authenticate(db, token)
    assert principal.name == "admin" and principal.is_admin
    again = ensure_dev_token(settings.database_url, tmp_path)
    assert token not in again and token_file.read_text().strip() == token
    assert ensure_admin(db)[1] is None
