"""Users, API tokens and status-page sessions. A token is shown once at creation; only its
sha256 is stored.

Tokens look like `st_<43 url-safe characters>` (256 random bits), so a plain sha256 is a
safe verifier: there is nothing to brute-force that a slow hash would protect. A session
(one sign-in at /login) is a row tied to the token it came from; its cookie carries another
256-bit random value, stored the same way. Revoking the token, logging out, an admin, or
its expiry ends it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from shared.infra.db import Database, affected_rows
from shared.infra.models import ApiToken, User, UserSession, utcnow

TOKEN_PREFIX = "st_"  # noqa: S105 (a prefix, not a secret)
LAST_USED_RESOLUTION = timedelta(minutes=5)
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


class AuthError(ValueError):
    """A user or token operation was refused (name taken, unknown user, ...)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: enough to authorize, detached from any session."""

    user_id: int
    name: str
    is_admin: bool
    token_id: int | None = None
    session_id: int | None = None  # set when the caller signed in at /login

    def may_see(self, owner_id: int | None) -> bool:
        return self.is_admin or (owner_id is not None and owner_id == self.user_id)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(db: Database, name: str, is_admin: bool = False) -> User:
    if not USER_NAME.match(name):
        raise AuthError("a user name is 1-100 characters: letters, digits and _ . @ - (not first)")
    try:
        with db.session() as session:
            user = User(name=name, is_admin=is_admin)
            session.add(user)
            session.flush()
    except IntegrityError:
        raise AuthError(f"user {name!r} already exists") from None
    return user


def get_user(db: Database, name: str) -> User | None:
    with db.session() as session:
        return session.scalars(select(User).where(User.name == name)).first()


def list_users(db: Database) -> list[User]:
    with db.session() as session:
        return list(session.scalars(select(User).order_by(User.id)))


def create_token(db: Database, user_name: str, label: str = "") -> tuple[ApiToken, str]:
    """A new token for a user: returns the row and the token itself (shown once, never stored)."""
    user = get_user(db, user_name)
    if user is None:
        raise AuthError(f"no user named {user_name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        row = ApiToken(
            user_id=user.id, token_hash=hash_token(token), prefix=token[:10], label=label[:100]
        )
        session.add(row)
        session.flush()
    return row, token


def revoke_token(db: Database, token_id: int) -> bool:
    """Revoke a token. Caches in this process forget it at once; an API process elsewhere
    refuses it within its cache's lifetime (`SEQTRAIN_AUTH_CACHE_SECONDS`)."""
    with db.session() as session:
        result = session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        revoked = bool(affected_rows(result))
        # Its sessions end with it (a session is refused anyway once its token is revoked).
        session.execute(
            update(UserSession)
            .where(UserSession.token_id == token_id, UserSession.ended_at.is_(None))
            .values(ended_at=utcnow())
        )
    for cache in list(_CACHES):
        cache.forget_token(token_id)
    return revoked


def list_tokens(db: Database, user_name: str) -> list[ApiToken]:
    with db.session() as session:
        return list(
            session.scalars(
                select(ApiToken)
                .join(User, User.id == ApiToken.user_id)
                .where(User.name == user_name)
                .order_by(ApiToken.id)
            )
        )


def authenticate(db: Database, token: str) -> Principal | None:
    """The principal a bearer token belongs to, or None for an unknown or revoked token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with db.session() as session:
        row = session.execute(
            select(ApiToken.id, ApiToken.last_used_at, User.id, User.name, User.is_admin)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        ).first()
        if row is None:
            return None
        now = utcnow()
        # Touch last_used_at at most every few minutes: not a write per request.
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return Principal(user_id=row[2], name=row[3], is_admin=row[4], token_id=row[0])


AUTH_CACHE_ENTRIES = 10_000
_CACHES: weakref.WeakSet[PrincipalCache] = weakref.WeakSet()


class PrincipalCache:
    """Token hash (or session key) -> principal for a few seconds, so a valid token or live
    session costs no database round trip on every request. Only valid tokens are kept (an unknown token always reaches the
    database and the failure limiter), at most `max_entries` of them, least recently used
    out first. A token revoked through `revoke_token` in this process is forgotten at once;
    revoked anywhere else, it is refused within `ttl` seconds."""

    def __init__(self, ttl: float, max_entries: int = AUTH_CACHE_ENTRIES) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()
        _CACHES.add(self)

    def get(self, token_hash: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None:
                return None
            if time.monotonic() >= entry[0]:
                del self._entries[token_hash]
                return None
            self._entries.move_to_end(token_hash)
            return entry[1]

    def put(self, token_hash: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[token_hash] = (time.monotonic() + self.ttl, principal)
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget_token(self, token_id: int) -> None:
        """Forget the token and every session signed in with it."""
        self._forget(lambda p: p.token_id == token_id)

    def forget_sessions(self, session_ids: set[int]) -> None:
        if session_ids:
            self._forget(lambda p: p.session_id in session_ids)

    def _forget(self, matches: Callable[[Principal], bool]) -> None:
        with self._lock:
            for key in [k for k, (_, p) in self._entries.items() if matches(p)]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def authenticate_cached(db: Database, token: str, cache: PrincipalCache) -> Principal | None:
    """`authenticate`, answered from `cache` while a valid token's entry is fresh."""
    token_hash = hash_token(token)
    principal = cache.get(token_hash)
    if principal is None:
        principal = authenticate(db, token)
        if principal is not None:
            cache.put(token_hash, principal)
    return principal


SESSION_KEY_PREFIX = "session:"  # a session's entry in a PrincipalCache, beside token hashes
SESSION_RETENTION = timedelta(days=30)  # ended or expired rows are kept this long for listings


def create_session(
    db: Database, principal: Principal, hours: float, address: str = ""
) -> tuple[UserSession, str]:
    """A new session for a principal that signed in with a token: the row and the value for
    its cookie (never stored; only its sha256 is)."""
    if principal.token_id is None:
        raise AuthError("a session starts from a token")
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    with db.session() as session:
        session.execute(
            delete(UserSession).where(
                UserSession.user_id == principal.user_id,
                UserSession.expires_at < now - SESSION_RETENTION,
            )
        )
        row = UserSession(
            id_hash=hash_token(secret),
            user_id=principal.user_id,
            token_id=principal.token_id,
            address=address[:64],
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=hours),
        )
        session.add(row)
        session.flush()
    return row, secret


def session_principal(
    db: Database, secret: str, cache: PrincipalCache | None = None
) -> Principal | None:
    """The principal of a live session (not ended, not expired, its token not revoked), or
    None. With `cache`, a live session costs no database round trip for `cache.ttl` seconds."""
    if not secret or len(secret) > 200:
        return None
    key = SESSION_KEY_PREFIX + hash_token(secret)
    principal = cache.get(key) if cache is not None else None
    if principal is not None:
        return principal
    now = utcnow()
    with db.session() as session:
        row = session.execute(
            select(
                UserSession.id,
                UserSession.last_seen_at,
                ApiToken.id,
                User.id,
                User.name,
                User.is_admin,
            )
            .join(ApiToken, ApiToken.id == UserSession.token_id)
            .join(User, User.id == UserSession.user_id)
            .where(
                UserSession.id_hash == hash_token(secret),
                UserSession.ended_at.is_(None),
                UserSession.expires_at > now,
                ApiToken.revoked_at.is_(None),
            )
        ).first()
        if row is None:
            return None
        if now - row.last_seen_at > LAST_USED_RESOLUTION:
            session.execute(
                update(UserSession).where(UserSession.id == row[0]).values(last_seen_at=now)
            )
    principal = Principal(row[3], row[4], row[5], token_id=row[2], session_id=row[0])
    if cache is not None:
        cache.put(key, principal)
    return principal


def get_session(db: Database, session_id: int) -> UserSession | None:
    with db.session() as session:
        return session.get(UserSession, session_id)


def list_sessions(db: Database, user_id: int, include_ended: bool = False) -> list[UserSession]:
    """A user's sessions, newest first: the live ones, or (include_ended) every one kept."""
    query = select(UserSession).where(UserSession.user_id == user_id)
    if not include_ended:
        query = query.where(UserSession.ended_at.is_(None), UserSession.expires_at > utcnow())
    with db.session() as session:
        return list(session.scalars(query.order_by(UserSession.id.desc())))


def end_sessions(
    db: Database, *, session_id: int | None = None, secret: str = "", user_id: int | None = None
) -> list[int]:
    """End one session (by id or by its cookie value) or every session of a user; returns the
    ids ended. Caches in this process forget them at once; an API process elsewhere refuses
    them within its cache's lifetime (`SEQTRAIN_AUTH_CACHE_SECONDS`)."""
    query = select(UserSession.id).where(UserSession.ended_at.is_(None))
    if session_id is not None:
        query = query.where(UserSession.id == session_id)
    elif secret:
        query = query.where(UserSession.id_hash == hash_token(secret))
    elif user_id is not None:
        query = query.where(UserSession.user_id == user_id)
    else:
        return []
    with db.session() as session:
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                update(UserSession)
                .where(UserSession.id.in_(ids), UserSession.ended_at.is_(None))
                .values(ended_at=utcnow())
            )
    for cache in list(_CACHES):
        cache.forget_sessions(set(ids))
    return ids


def ensure_admin(db: Database, name: str = "admin") -> tuple[User, str | None]:
    """The first admin: creates it and a token on first start; (user, token or None if it existed)."""
    existing = get_user(db, name)
    if existing is not None:
        return existing, None
    user = create_user(db, name, is_admin=True)
    _, token = create_token(db, name, label="created by seqtrain up")
    return user, token
