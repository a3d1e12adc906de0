"""The API's token cache and its database pool: fewer round trips, the same security."""

import time
import uuid

import pytest
import redis as redis_lib
from sqlalchemy import event, select, text, update

from shared.auth import Principal, PrincipalCache, revoke_token
from shared.infra.db import Database
from shared.infra.models import ApiToken


def make_app(settings, **config):
    from api import create_app

    return create_app(settings, {"TESTING": True, **config})


class StatementCounter:
    def __init__(self, engine):
        self.statements = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, *_args):
        self.statements.append(statement)

    def touching(self, table):
        return [s for s in self.statements if table in s]


def redis_gets(url):
    stats = redis_lib.Redis.from_url(url).info("commandstats")
    return stats.get("cmdstat_get", {}).get("calls", 0)


def test_a_cached_token_costs_no_database_or_redis_round_trip(settings, accounts):
    app = make_app(settings)
    client = app.test_client()
    headers = accounts["alice"].headers
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200  # fills the cache
    statements = StatementCounter(app.extensions["seqtrain"].db.engine)
    gets = redis_gets(settings.redis_url)
    for _ in range(5):
        assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    assert len(statements.touching("FROM jobs")) == 5  # the page query
    assert statements.touching("api_tokens") == []  # no token lookup
    assert redis_gets(settings.redis_url) == gets  # no failed-sign-in lookup
    app.extensions["seqtrain"].db.dispose()


def test_a_token_revoked_elsewhere_is_refused_once_the_cache_entry_expires(settings, accounts, db):
    app = make_app(settings, AUTH_CACHE_SECONDS=0.5)
    client = app.test_client()
    headers = accounts["alice"].headers
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    # Another process (the CLI, another API worker) revokes it: straight in SQL.
    with db.session() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == accounts["alice"].user_id)
            .values(revoked_at=text("CURRENT_TIMESTAMP"))
        )
    time.sleep(0.6)
    refused = client.get("/api/v1/jobs", headers=headers)
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
    app.extensions["seqtrain"].db.dispose()


def test_a_token_revoked_in_this_process_is_refused_at_once(settings, accounts, db):
    app = make_app(settings, AUTH_CACHE_SECONDS=3600)
    client = app.test_client()
    headers = accounts["bob"].headers
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    with db.session() as session:
        token_id = session.scalar(
            select(ApiToken.id).where(ApiToken.user_id == accounts["bob"].user_id)
        )
    assert revoke_token(db, token_id)
    assert client.get("/api/v1/jobs", headers=headers).status_code == 401
    app.extensions["seqtrain"].db.dispose()


def test_a_cached_token_from_a_blocked_address_is_still_accepted(settings, accounts, redis_url):
    from dataclasses import replace

    address = "10.9.8.5"
    redis_lib.Redis.from_url(redis_url).delete(f"seqtrain:authfail:{address}")
    app = make_app(replace(settings, auth_failure_limit=2))
    client = app.test_client()
    env = {"REMOTE_ADDR": address}
    headers = accounts["alice"].headers
    assert client.get("/api/v1/jobs", headers=headers, environ_base=env).status_code == 200
    for _ in range(2):
        guess = f"Bearer st_guess-{uuid.uuid4().hex}"
        bad = client.get("/api/v1/jobs", headers={"Authorization": guess}, environ_base=env)
        assert bad.status_code == 401
    gets = redis_gets(settings.redis_url)
    # Others' failures from its address never refuse a valid token, and a cached one still
    # costs no Redis round trip.
    assert client.get("/api/v1/jobs", headers=headers, environ_base=env).status_code == 200
    assert redis_gets(settings.redis_url) == gets
    app.extensions["seqtrain"].db.dispose()


def test_unknown_tokens_are_never_cached_and_the_cache_is_bounded(settings, accounts):
    app = make_app(settings)
    client = app.test_client()
    for n in range(3):
        client.get("/api/v1/jobs", headers={"Authorization": f"Bearer st_guess-{n}"})
    assert len(app.extensions["seqtrain"].tokens) == 0
    app.extensions["seqtrain"].db.dispose()

    cache = PrincipalCache(ttl=60, max_entries=2)
    for n in range(3):
        cache.put(f"hash-{n}", Principal(n, f"user-{n}", False, token_id=n))
    assert len(cache) == 2 and cache.get("hash-0") is None and cache.get("hash-2") is not None
    assert PrincipalCache(ttl=0).get("anything") is None


def test_last_used_is_not_written_on_every_authentication(settings, accounts, db):
    app = make_app(settings, AUTH_CACHE_SECONDS=0)  # no cache: every request authenticates
    client = app.test_client()

    def last_used():
        with db.session() as session:
            return session.scalar(
                select(ApiToken.last_used_at).where(ApiToken.user_id == accounts["alice"].user_id)
            )

    assert last_used() is None
    client.get("/api/v1/jobs", headers=accounts["alice"].headers)
    first = last_used()
    assert first is not None
    for _ in range(3):
        client.get("/api/v1/jobs", headers=accounts["alice"].headers)
    assert last_used() == first
    app.extensions["seqtrain"].db.dispose()


def test_an_idle_connection_the_server_dropped_is_replaced(settings, db):
    if db.is_sqlite:
        pytest.skip("PostgreSQL pool behaviour")
    pooled = Database(settings.database_url, ping_after_idle=0.0)
    with pooled.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with db.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.commit()
    time.sleep(0.2)
    with pooled.session() as session:  # the ping finds it dead; the pool opens another
        assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    pooled.dispose()
