"""Who is calling, and may they? Bearer tokens for the API, a session cookie for pages.

- `Authorization: Bearer <token>` authenticates any /api/v1 request.
- A status-page session (after /login) authenticates too; its writes need the session's
  CSRF token in `X-CSRF-Token` (pages put it in forms as `csrf_token`).
- A valid token's principal is cached in process for SEQTRAIN_AUTH_CACHE_SECONDS (15 s):
  a request with a cached token costs no database or Redis round trip. A token revoked by
  another process is refused within that time.
- Failed attempts are counted per client address in Redis; past the limit the client gets
  429 until the window ends. Every token this process does not already know is checked
  against that count before the database; a cached token only when this process has seen
  its address fail. Tokens are never logged.
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
from shared.protocol import auth_failure_key

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
    """Counts failed logins per client address in fixed windows (Redis; in-process fallback)."""

    FLAGGED_MAX = 10_000

    def __init__(self, redis_url: str, limit: int, window_seconds: int = 60) -> None:
        self.limit, self.window = limit, window_seconds
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.local: dict[str, tuple[float, int]] = {}
        # Addresses this process saw fail or blocked, until their window ends (no I/O).
        self._flagged: dict[str, float] = {}

    def _key(self, client: str) -> str:
        return auth_failure_key(client)

    def _flag(self, client: str, seconds: float) -> None:
        now = time.monotonic()
        if len(self._flagged) >= self.FLAGGED_MAX:
            self._flagged = {c: t for c, t in list(self._flagged.items()) if t > now}
            if len(self._flagged) >= self.FLAGGED_MAX:
                self._flagged.clear()
        self._flagged[client] = now + seconds

    def flagged(self, client: str) -> bool:
        """Whether this process saw the client fail (or be blocked) in the current window."""
        until = self._flagged.get(client)
        return until is not None and time.monotonic() < until

    def blocked_for(self, client: str) -> int:
        """Seconds the client must wait, or 0."""
        wait = self._blocked_for(client)
        if wait:
            self._flag(client, wait)
        return wait

    def _blocked_for(self, client: str) -> int:
        try:
            count = int(self.redis.get(self._key(client)) or 0)
            if count >= self.limit:
                return max(1, int(self.redis.ttl(self._key(client))))
            return 0
        except redis.RedisError:
            started, count = self.local.get(client, (0.0, 0))
            remaining = self.window - (time.monotonic() - started)
            return max(1, int(remaining)) if count >= self.limit and remaining > 0 else 0

    def record_failure(self, client: str) -> None:
        self._flag(client, self.window)
        key = self._key(client)
        try:
            _, ttl = self.redis.pipeline().incr(key).ttl(key).execute()
            if ttl < 0:  # first failure of a window (EXPIRE ... NX needs Redis 7)
                self.redis.expire(key, self.window)
        except redis.RedisError:
            started, count = self.local.get(client, (time.monotonic(), 0))
            if time.monotonic() - started > self.window:
                started, count = time.monotonic(), 0
            self.local[client] = (started, count + 1)


def client_address() -> str:
    return request.remote_addr or "unknown"


def guard_failures(limiter: FailureLimiter) -> None:
    wait = limiter.blocked_for(client_address())
    if wait:
        raise ApiError(
            429,
            "too_many_requests",
            f"too many failed sign-ins; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


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
        token = token.strip()
        principal = cache.get(auth.hash_token(token)) if cache is not None else None
        if principal is None or limiter.flagged(client_address()):
            guard_failures(limiter)
        if principal is None:
            principal = (
                auth.authenticate(db, token)
                if cache is None
                else auth.authenticate_cached(db, token, cache)
            )
        if principal is None:
            limiter.record_failure(client_address())
            raise ApiError(
                401,
                "unauthorized",
                "unknown or revoked token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return principal
    user_id = session.get("user_id")
    if isinstance(user_id, int):
        principal = auth.principal_for_user(db, user_id)
        if principal is not None:
            if request.method not in SAFE_METHODS:
                check_csrf(request.headers.get("X-CSRF-Token"))
            return principal
        session.clear()
    raise ApiError(
        401,
        "unauthorized",
        "authentication required: Authorization: Bearer <token>",
        headers={"WWW-Authenticate": "Bearer"},
    )
