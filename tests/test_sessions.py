"""Status-page sessions in SQL and a sign-in limiter that punishes the failing credential:
revoking the token or logging out ends a session (a copied cookie included), sessions
expire, admins list and end them; others' failures from an address never refuse a valid
token, and every 429 says when to retry. Against a real HTTP server where it matters."""

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
import redis as redis_lib
import requests
from alembic import command
from sqlalchemy import inspect, select, update
from werkzeug.serving import make_server

from migrations import alembic_config
from shared.auth import authenticate, hash_token
from shared.infra.db import make_engine
from shared.infra.models import UserSession, utcnow
from tests.conftest import ROOT

CACHE_SECONDS = 1.0


def make_app(settings, **config):
    from api import create_app

    return create_app(settings, {"TESTING": True, **config})


def close(app):
    app.extensions["seqtrain"].db.dispose()
    app.extensions["seqtrain"].limiter.redis.close()


@pytest.fixture
def serve():
    """serve(app) -> the base URL of a real HTTP server (threaded werkzeug) for the app."""
    running = []

    def start(app):
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread, app))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread, app in running:
        server.shutdown()
        thread.join()
        close(app)


@pytest.fixture
def fresh_limits(redis_url):
    """No failures left in Redis from other tests (both backends share one Redis)."""
    client = redis_lib.Redis.from_url(redis_url)

    def clear():
        keys = list(client.scan_iter("seqtrain:authfail*"))
        if keys:
            client.delete(*keys)

    clear()
    yield client
    clear()
    client.close()


def form_csrf(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(base_url, token):
    """A browser-like session signed in at /login (requests keeps the cookie)."""
    browser = requests.Session()
    csrf = form_csrf(browser.get(f"{base_url}/login", timeout=10).text)
    response = browser.post(
        f"{base_url}/login",
        data={"token": token, "csrf_token": csrf},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text
    return browser


def replay(base_url, cookie):
    """The API with nothing but a copied session cookie."""
    return requests.get(
        f"{base_url}/api/v1/jobs", cookies={"seqtrain_session": cookie}, timeout=10
    ).status_code


def seqtrain(settings, *args):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env=dict(os.environ, DATABASE_URL=settings.database_url),
    )


def token_id(db, token):
    return authenticate(db, token).token_id


# ---------------------------------------------------------------- revocation and logout


def test_a_session_ends_when_its_token_is_revoked_by_another_process(settings, accounts, serve, db):
    """Log in, `seqtrain tokens revoke ID` (another process), wait the cache period, replay."""
    base = serve(make_app(settings, AUTH_CACHE_SECONDS=CACHE_SECONDS))
    browser = sign_in(base, accounts["alice"].token)
    cookie = browser.cookies["seqtrain_session"]
    assert replay(base, cookie) == 200
    revoked = seqtrain(settings, "tokens", "revoke", str(token_id(db, accounts["alice"].token)))
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(CACHE_SECONDS + 0.5)
    assert replay(base, cookie) == 401
    page = browser.get(f"{base}/", allow_redirects=False, timeout=10)
    assert page.status_code == 302 and page.headers["Location"].endswith("/login")
    with db.session() as session:
        row = session.scalars(select(UserSession)).one()
        assert row.ended_at is not None  # the listing says so too


def test_a_token_revoked_in_the_same_process_ends_its_sessions_at_once(settings, accounts, db):
    from shared.auth import revoke_token

    app = make_app(settings, AUTH_CACHE_SECONDS=3600)
    browser = app.test_client()
    csrf = form_csrf(browser.get("/login").text)
    browser.post("/login", data={"token": accounts["bob"].token, "csrf_token": csrf})
    assert browser.get("/api/v1/jobs").status_code == 200  # cached for an hour now
    assert revoke_token(db, token_id(db, accounts["bob"].token))
    assert browser.get("/api/v1/jobs").status_code == 401
    close(app)


def test_logout_ends_the_session_for_a_copied_cookie_too(settings, accounts, serve):
    """Capture the cookie, POST /logout, replay the captured cookie."""
    base = serve(make_app(settings))
    browser = sign_in(base, accounts["alice"].token)
    captured = browser.cookies["seqtrain_session"]
    assert replay(base, captured) == 200
    home = browser.get(f"{base}/", timeout=10)
    out = browser.post(
        f"{base}/logout",
        data={"csrf_token": form_csrf(home.text)},
        allow_redirects=False,
        timeout=10,
    )
    assert out.status_code == 302
    assert replay(base, captured) == 401
    assert (
        requests.get(
            f"{base}/", cookies={"seqtrain_session": captured}, allow_redirects=False, timeout=10
        )
        .headers["Location"]
        .endswith("/login")
    )


def test_logout_reaches_other_api_processes_within_the_cache_period(settings, accounts):
    one = make_app(settings, AUTH_CACHE_SECONDS=CACHE_SECONDS)
    other = make_app(settings, AUTH_CACHE_SECONDS=CACHE_SECONDS)  # same secret key
    first, second = one.test_client(), other.test_client()
    csrf = form_csrf(first.get("/login").text)
    first.post("/login", data={"token": accounts["alice"].token, "csrf_token": csrf})
    cookie = first.get_cookie("seqtrain_session").value
    second.set_cookie("seqtrain_session", cookie)
    assert second.get("/api/v1/jobs").status_code == 200  # the other process caches it
    page_csrf = form_csrf(first.get("/").text)
    assert first.post("/logout", data={"csrf_token": page_csrf}).status_code == 302
    time.sleep(CACHE_SECONDS + 0.2)
    assert second.get("/api/v1/jobs").status_code == 401
    close(one)
    close(other)


def test_the_cookie_carries_only_the_session_id_and_sql_only_its_hash(app, accounts, db):
    browser = app.test_client()
    csrf = form_csrf(browser.get("/login").text)
    browser.post("/login", data={"token": accounts["alice"].token, "csrf_token": csrf})
    browser.get("/")  # creates the session's CSRF token
    raw = browser.get_cookie("seqtrain_session").value
    content = app.session_interface.get_signing_serializer(app).loads(raw)
    assert set(content) == {"sid", "csrf", "_permanent"}  # no user id, name or token
    with db.session() as session:
        row = session.scalars(select(UserSession)).one()
    assert row.id_hash == hash_token(content["sid"]) and content["sid"] not in row.id_hash
    assert row.user_id == accounts["alice"].user_id
    assert row.token_id == token_id(db, accounts["alice"].token)
    assert row.address == "127.0.0.1"


def test_signing_in_again_ends_the_browsers_previous_session(app, accounts, db):
    browser = app.test_client()
    for token in (accounts["alice"].token, accounts["bob"].token):
        csrf = form_csrf(browser.get("/login").text)
        assert browser.post("/login", data={"token": token, "csrf_token": csrf}).status_code == 302
    with db.session() as session:
        rows = list(session.scalars(select(UserSession).order_by(UserSession.id)))
    assert [r.ended_at is not None for r in rows] == [True, False]
    assert browser.get("/api/v1/jobs").status_code == 200


# ---------------------------------------------------------------- expiry


def test_sessions_expire(settings, accounts, db):
    app = make_app(replace(settings, session_hours=2.0), AUTH_CACHE_SECONDS=0)
    assert app.permanent_session_lifetime == timedelta(hours=2)
    browser = app.test_client()
    csrf = form_csrf(browser.get("/login").text)
    browser.post("/login", data={"token": accounts["alice"].token, "csrf_token": csrf})
    with db.session() as session:
        row = session.scalars(select(UserSession)).one()
    assert timedelta(hours=2) - (row.expires_at - row.created_at) < timedelta(seconds=1)
    assert browser.get("/api/v1/jobs").status_code == 200
    with db.session() as session:  # two hours later
        session.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert browser.get("/api/v1/jobs").status_code == 401
    assert browser.get("/").status_code == 302
    close(app)


# ---------------------------------------------------------------- admin: list and end


def signed_in_client(app, account):
    browser = app.test_client()
    csrf = form_csrf(browser.get("/login").text)
    browser.post("/login", data={"token": account.token, "csrf_token": csrf})
    return browser


def test_an_admin_lists_and_ends_a_users_sessions(app, anon, accounts):
    laptop, phone = (
        signed_in_client(app, accounts["alice"]),
        signed_in_client(app, accounts["alice"]),
    )
    root = accounts["root"].headers
    listed = anon.get("/api/v1/users/alice/sessions", headers=root)
    assert listed.status_code == 200
    sessions = listed.json["sessions"]
    assert len(sessions) == 2 and all(s["active"] and s["user"] == "alice" for s in sessions)
    assert sessions[0]["id"] > sessions[1]["id"]  # newest first
    newest = sessions[0]["id"]
    assert anon.delete(f"/api/v1/sessions/{newest}", headers=root).status_code == 204
    assert phone.get("/api/v1/jobs").status_code == 401  # the newest was the phone's
    assert laptop.get("/api/v1/jobs").status_code == 200
    assert anon.delete(f"/api/v1/sessions/{newest}", headers=root).status_code == 204  # no-op
    ended = anon.delete("/api/v1/users/alice/sessions", headers=root)
    assert ended.status_code == 200 and ended.json == {"ended": [sessions[1]["id"]]}
    assert laptop.get("/api/v1/jobs").status_code == 401
    assert anon.get("/api/v1/users/alice/sessions", headers=root).json == {"sessions": []}
    everything = anon.get("/api/v1/users/alice/sessions?include_ended=true", headers=root).json
    assert [s["active"] for s in everything["sessions"]] == [False, False]
    assert all(s["ended_at"] for s in everything["sessions"])
    assert anon.get("/api/v1/users/nobody/sessions", headers=root).status_code == 404
    assert anon.delete("/api/v1/sessions/999999", headers=root).status_code == 404
    bad = anon.get("/api/v1/users/alice/sessions?include_ended=maybe", headers=root)
    assert bad.status_code == 400 and bad.json["error"]["fields"][0]["path"] == "include_ended"


def test_a_user_cannot_list_or_end_anothers_sessions(app, anon, accounts):
    alice = signed_in_client(app, accounts["alice"])
    own = anon.get("/api/v1/users/alice/sessions", headers=accounts["alice"].headers)
    assert own.status_code == 200
    session_id = own.json["sessions"][0]["id"]
    bob = accounts["bob"].headers
    listed = anon.get("/api/v1/users/alice/sessions", headers=bob)
    assert listed.status_code == 403 and listed.json["error"]["code"] == "forbidden"
    assert anon.get("/api/v1/users/nobody/sessions", headers=bob).status_code == 403
    assert anon.delete(f"/api/v1/sessions/{session_id}", headers=bob).status_code == 403
    assert anon.delete("/api/v1/users/alice/sessions", headers=bob).status_code == 403
    assert anon.get("/api/v1/users/alice/sessions").status_code == 401
    assert alice.get("/api/v1/jobs").status_code == 200  # still signed in
    # A user may end their own session (with the session itself: CSRF applies).
    refused = alice.delete(f"/api/v1/sessions/{session_id}")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_failed"
    csrf = form_csrf(alice.get("/").text)
    ended = alice.delete(f"/api/v1/sessions/{session_id}", headers={"X-CSRF-Token": csrf})
    assert ended.status_code == 204 and alice.get("/api/v1/jobs").status_code == 401


def test_sessions_commands(settings, app, accounts):
    signed_in_client(app, accounts["alice"])
    signed_in_client(app, accounts["alice"])
    listed = seqtrain(settings, "sessions", "list", "alice", "--json")
    assert listed.returncode == 0, listed.stderr
    import json

    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and all(r["active"] for r in rows)
    ended = seqtrain(settings, "sessions", "end", str(rows[0]["id"]), "--json")
    assert ended.returncode == 0 and json.loads(ended.stdout)["ended"] == [rows[0]["id"]]
    again = seqtrain(settings, "sessions", "end", str(rows[0]["id"]))
    assert again.returncode == 1 and "not live" in again.stdout
    assert seqtrain(settings, "sessions", "end", "--user", "alice").returncode == 0
    assert json.loads(seqtrain(settings, "sessions", "list", "alice", "--json").stdout) == []
    text = seqtrain(settings, "sessions", "list", "alice", "--all").stdout
    assert text.count("ended") == 2
    assert seqtrain(settings, "sessions", "list", "nobody").returncode == 1


# ---------------------------------------------------------------- the sign-in limiter


def test_others_failures_never_refuse_a_valid_token(settings, accounts, serve, fresh_limits):
    """21 requests with `Bearer bad` from one address (the loopback, as behind a proxy), then
    a valid token: 200."""
    base = serve(make_app(replace(settings, auth_failure_limit=20), AUTH_CACHE_SECONDS=0))
    jobs_url = f"{base}/api/v1/jobs"
    answers = [
        requests.get(jobs_url, headers={"Authorization": "Bearer bad"}, timeout=10)
        for _ in range(21)
    ]
    assert [r.status_code for r in answers] == [401] * 20 + [429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert answers[-1].json()["error"]["code"] == "too_many_requests"
    for account in ("alice", "bob"):
        ok = requests.get(jobs_url, headers=accounts[account].headers, timeout=10)
        assert ok.status_code == 200
    sign_in(base, accounts["alice"].token)  # the page sign-in too
    # A new wrong token from the flooded address: refused, with Retry-After.
    other = requests.get(jobs_url, headers={"Authorization": "Bearer st_other"}, timeout=10)
    assert other.status_code == 429 and int(other.headers["Retry-After"]) > 0


def test_a_failing_token_is_limited_from_every_address(settings, accounts, fresh_limits, db):
    from sqlalchemy import event

    app = make_app(replace(settings, auth_failure_limit=3))
    client = app.test_client()
    guess = {"Authorization": f"Bearer st_{uuid.uuid4().hex}"}
    for n in range(3):
        response = client.get(
            "/api/v1/jobs", headers=guess, environ_base={"REMOTE_ADDR": f"10.0.0.{n}"}
        )
        assert response.status_code == 401
    lookups = []
    event.listen(
        app.extensions["seqtrain"].db.engine,
        "before_cursor_execute",
        lambda *args: lookups.append(args[2]),
    )
    blocked = client.get("/api/v1/jobs", headers=guess, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert [s for s in lookups if "api_tokens" in s] == []  # refused without a lookup
    # A valid token from that same fresh address is fine.
    ok = client.get(
        "/api/v1/jobs", headers=accounts["alice"].headers, environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert ok.status_code == 200
    # Only hashes of presented tokens reach Redis.
    keys = [k.decode() for k in fresh_limits.scan_iter("seqtrain:authfail*")]
    secret = guess["Authorization"].removeprefix("Bearer ")
    assert keys and not any(secret in k for k in keys)
    assert f"seqtrain:authfail-token:{hash_token(secret)}" in keys
    close(app)


def test_login_429_sends_retry_after(settings, accounts, serve, fresh_limits):
    """21 bad sign-ins at /login: the 21st is a 429 with Retry-After; a valid one still works."""
    base = serve(make_app(replace(settings, auth_failure_limit=20)))
    browser = requests.Session()
    csrf = form_csrf(browser.get(f"{base}/login", timeout=10).text)
    answers = [
        browser.post(
            f"{base}/login",
            data={"token": f"st_wrong-{n}", "csrf_token": csrf},
            allow_redirects=False,
            timeout=10,
        )
        for n in range(21)
    ]
    assert [r.status_code for r in answers] == [401] * 20 + [429]
    wait = int(answers[-1].headers["Retry-After"])
    assert 0 < wait <= 60 and f"retry in {wait} s" in answers[-1].text
    assert "Unknown or revoked token." in answers[0].text
    ok = browser.post(
        f"{base}/login",
        data={"token": accounts["alice"].token, "csrf_token": csrf},
        allow_redirects=False,
        timeout=10,
    )
    assert ok.status_code == 302


def test_the_limiter_counts_in_process_while_redis_is_down(settings, accounts):
    app = make_app(
        replace(settings, redis_url="redis://127.0.0.1:1/0", auth_failure_limit=2),
        AUTH_CACHE_SECONDS=0,
    )
    client = app.test_client()
    guess = {"Authorization": "Bearer st_guess-while-redis-is-down"}
    assert [client.get("/api/v1/jobs", headers=guess).status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]
    assert client.get("/api/v1/jobs", headers=accounts["alice"].headers).status_code == 200
    close(app)


# ---------------------------------------------------------------- the migration


def test_the_sessions_migration_upgrades_and_downgrades(database_url, db):
    engine = make_engine(database_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("user_sessions")}
        assert {"id_hash", "user_id", "token_id", "expires_at", "ended_at"} <= columns
        config = alembic_config(database_url)
        command.downgrade(config, "0007")
        assert "user_sessions" not in inspect(engine).get_table_names()
        command.upgrade(config, "head")
        assert "user_sessions" in inspect(engine).get_table_names()
        uniques = inspect(engine).get_unique_constraints("user_sessions")
        indexes = inspect(engine).get_indexes("user_sessions")
        assert any(u["column_names"] == ["id_hash"] for u in uniques) or any(
            i["column_names"] == ["id_hash"] and i["unique"] for i in indexes
        )
    finally:
        engine.dispose()


def test_a_live_cached_session_costs_no_session_lookup(app, accounts):
    from sqlalchemy import event

    browser = signed_in_client(app, accounts["alice"])
    assert browser.get("/api/v1/jobs").status_code == 200  # fills the cache
    statements = []
    event.listen(
        app.extensions["seqtrain"].db.engine,
        "before_cursor_execute",
        lambda *args: statements.append(args[2]),
    )
    for _ in range(3):
        assert browser.get("/api/v1/jobs").status_code == 200
    assert statements and not [s for s in statements if "user_sessions" in s]
