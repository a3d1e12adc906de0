"""Who is calling, and may they? Bearer tokens for the API, a session for pages.

- `Authorization: Bearer <token>` authenticates any /api/v1 request.
- A status-page session (after /login) authenticates too. It is a row in SQL
  (shared.auth.create_session) tied to the token it signed in with; the signed, HttpOnly
  cookie carries only the session's random id and the CSRF token. Its writes need that
  CSRF token in `X-CSRF-Token` (pages put it in forms as `csrf_token`). Logging out,
  revoking the token, an admin, or SEQTRAIN_SESSION_HOURS end it.
- A valid token's or live session's principal is cached in process for
  SEQTRAIN_AUTH_CACHE_SECONDS (15 s): a cached request costs no database or Redis round
  trip. Revoked or ended in this process, it is forgotten at once; elsewhere, it is refused
  within that time.
- Failed attempts are counted in Redis per client address and per presented token (its
  sha256). A token that failed `limit` times in the window is refused (429) without a
  database lookup; once an address has failed `limit` times, its failing attempts get 429
  instead of 401. A valid token is always accepted: someone else's failures from the same
  address (every client, behind a reverse proxy) never lock it out. Tokens are never logged.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

import redis
from flask import current_app, g, request, session

from api.errors import ApiError
from shared import auth
from shared.auth import Principal
from shared.protocol import auth_failure_key, auth_token_failure_key

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_ID = "sid"  # the cookie's field holding the session's random id


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal


def authorize(owner_id: int | None, what: str) -> None:
    """403 unless the caller owns the object or is an admin."""
    if not current_principal().may_see(owner_id):
        raise ApiError(403, "forbidden", f"{what} belongs to another user")


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf(supplied: str | None) -> None:
    expected = session.get("csrf")
    if not expected or not supplied or not hmac.compare_digest(str(expected), supplied):
        raise ApiError(403, "csrf_failed", "missing or wrong CSRF token; reload the page and retry")


class FailureLimiter:
    """Counts failed sign-ins per subject (an address, a presented token's hash) in fixed
    windows: Redis, or an in-process fallback while Redis does not answer."""

    LOCAL_MAX = 10_000

    def __init__(self, redis_url: str, limit: int, window_seconds: int = 60) -> None:
        self.limit, self.window = limit, window_seconds
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.local: dict[str, tuple[float, int]] = {}

    def waits(self, *keys: str) -> list[int]:
        """For each key, the seconds until its window ends if it is at the limit, else 0 (one
        Redis round trip)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.get(key).ttl(key)
            answers = pipe.execute()
            counts, ttls = answers[0::2], answers[1::2]
            return [
                max(1, int(ttl)) if int(count or 0) >= self.limit else 0
                for count, ttl in zip(counts, ttls, strict=True)
            ]
        except redis.RedisError:
            return [self._local_wait(key) for key in keys]

    def _local_wait(self, key: str) -> int:
        started, count = self.local.get(key, (0.0, 0))
        remaining = self.window - (time.monotonic() - started)
        return max(1, int(remaining)) if count >= self.limit and remaining > 0 else 0

    def record_failure(self, *keys: str) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                # The first failure of a window sets its expiry; INCR keeps it.
                pipe.set(key, 0, ex=self.window, nx=True).incr(key)
            pipe.execute()
        except redis.RedisError:
            self._record_local(keys)

    def _record_local(self, keys: tuple[str, ...]) -> None:
        now = time.monotonic()
        if len(self.local) >= self.LOCAL_MAX:
            self.local = {k: v for k, v in self.local.items() if now - v[0] <= self.window}
            if len(self.local) >= self.LOCAL_MAX:
                self.local.clear()
        for key in keys:
            started, count = self.local.get(key, (now, 0))
            if now - started > self.window:
                started, count = now, 0
            self.local[key] = (started, count + 1)


def client_address() -> str:
    return request.remote_addr or "unknown"


def too_many(wait: int) -> ApiError:
    return ApiError(
        429,
        "too_many_requests",
        f"too many failed sign-ins; retry in {wait} s",
        headers={"Retry-After": str(wait)},
    )


def check_token(
    db: Any, limiter: FailureLimiter, token: str, cache: auth.PrincipalCache | None = None
) -> Principal:
    """The principal of a presented token, or ApiError 401 (wrong) / 429 (wrong too often,
    from this address or this very token). A valid token is never refused."""
    token_hash = auth.hash_token(token)
    if cache is not None and (principal := cache.get(token_hash)) is not None:
        return principal
    keys = (auth_failure_key(client_address()), auth_token_failure_key(token_hash))
    address_wait, token_wait = limiter.waits(*keys)
    if token_wait:  # this token failed again and again: not worth a database lookup
        raise too_many(token_wait)
    principal = (
        auth.authenticate(db, token)
        if cache is None
        else auth.authenticate_cached(db, token, cache)
    )
    if principal is not None:
        return principal
    limiter.record_failure(*keys)
    if address_wait:
        raise too_many(address_wait)
    raise ApiError(
        401,
        "unauthorized",
        "unknown or revoked token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def page_principal(db: Any, cache: auth.PrincipalCache | None = None) -> Principal | None:
    """The principal of the request's page session, or None (a dead session's cookie is
    cleared)."""
    secret = session.get(SESSION_ID)
    if not secret:
        return None
    principal = auth.session_principal(db, str(secret), cache)
    if principal is None:
        session.clear()
    return principal


def require_principal() -> None:
    """before_request hook of every /api/v1 blueprint: sets g.principal, or 401/403/429."""
    from api import services

    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, "public", False):
        return
    svc = services()
    g.principal = authenticate_request(svc.db, svc.limiter, svc.tokens)


def authenticate_request(
    db: Any, limiter: FailureLimiter, cache: auth.PrincipalCache | None = None
) -> Principal:
    """The caller of an /api/v1 request, from a bearer token or the page session."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "use the header Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return check_token(db, limiter, token.strip(), cache)
    principal = page_principal(db, cache)
    if principal is not None:
        if request.method not in SAFE_METHODS:
            check_csrf(request.headers.get("X-CSRF-Token"))
        return principal
    raise ApiError(
        401,
        "unauthorized",
        "authentication required: Authorization: Bearer <token>",
        headers={"WWW-Authenticate": "Bearer"},
    )
