"""Users: their limits (an admin sets them; see shared.limits) and their status-page
sessions (list a user's, end one or all of them). Admins may see and change anyone's; a
user may see their own limits and see and end their own sessions."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field

from api import services
from api.auth import authorize, current_principal, require_principal
from api.errors import ApiError
from api.http import json_body, query, reply
from api.openapi import API_PREFIX, id_rule, operation
from shared import auth, limits
from shared.infra.models import User, UserSession, utcnow
from shared.limits import SOFT_LIMITS, Limits

bp = Blueprint("sessions", __name__, url_prefix=API_PREFIX)
bp.before_request(require_principal)
USER = "/users/<name>"
USER_SESSIONS = USER + "/sessions"


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")

    id: int
    user: str
    token_id: int = Field(description="The token it signed in with (`seqtrain tokens list`).")
    address: str = Field(description="The client address at sign-in.")
    created_at: datetime
    last_seen_at: datetime = Field(description="Updated at most every few minutes.")
    expires_at: datetime
    ended_at: datetime | None = Field(description="Logout, token revoked, or ended by an admin.")
    active: bool


class SessionList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions: list[SessionOut]


class SessionsEnded(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ended: list[int] = Field(description="Ids of the sessions this request ended.")


class SessionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_ended: bool = Field(False, description="Also ended and expired sessions.")


def session_out(row: UserSession, user: str) -> SessionOut:
    active = row.ended_at is None and row.expires_at > utcnow()
    fields = {name: getattr(row, name) for name in SessionOut.model_fields if hasattr(row, name)}
    return SessionOut.model_validate({**fields, "user": user, "active": active})


class UserOut(Limits):
    model_config = ConfigDict(from_attributes=True, extra="forbid")

    id: int
    name: str
    is_admin: bool


class UserList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserOut]


def user_out(user: User) -> UserOut:
    return UserOut.model_validate(user)


def visible_user(name: str, what: str = "sessions") -> User:
    """The named user, if the caller is an admin or that user (403 otherwise, 404 unknown)."""
    principal = current_principal()
    if not principal.is_admin and name != principal.name:
        raise ApiError(403, "forbidden", f"only admins see other users' {what}")
    user = auth.get_user(services().db, name) if auth.USER_NAME.match(name) else None
    if user is None:
        raise ApiError(404, "not_found", f"no user named {name!r}")
    return user


def require_admin(what: str) -> None:
    if not current_principal().is_admin:
        raise ApiError(403, "forbidden", f"only an admin may {what}")


@operation(
    bp,
    "GET",
    "/users",
    summary="Every user with their limits (admins)",
    responses={200: UserList},
    tag="users",
)
def list_users() -> Response:
    """Users in the order they were created; a null limit is no limit."""
    require_admin("list users")
    return reply(UserList(users=[user_out(u) for u in auth.list_users(services().db)]))


@operation(
    bp,
    "GET",
    USER,
    summary="A user and their limits",
    responses={200: UserOut},
    errors=(404,),
    tag="users",
)
def show_user(name: str) -> Response:
    """Admins may see anyone; a user themselves. A null limit is no limit."""
    return reply(user_out(visible_user(name, "limits")))


@operation(
    bp,
    "PATCH",
    USER,
    summary="Set a user's limits (admins)",
    body=Limits,
    responses={200: UserOut},
    errors=(400, 404, 413, 415, 422),
    tag="users",
)
def set_user_limits(name: str) -> Response:
    """Only the limits named change; a null clears one. max_priority and max_queued refuse
    the user's next submissions (422, 429); max_running and max_devices hold their further
    jobs queued from the next claim on, and a job needing more than max_devices is a 422;
    a change to either wakes the user's queued jobs at once."""
    require_admin("set a user's limits")
    body = Limits.model_validate(json_body())
    if not body.model_fields_set:
        fields = [{"path": "", "message": "name at least one limit", "type": "missing"}]
        raise ApiError(
            422, "validation_error", f"name one or more of {', '.join(limits.LIMITS)}", fields
        )
    changes = body.model_dump(include=body.model_fields_set)
    user = limits.set_limits(services().db, name, changes) if auth.USER_NAME.match(name) else None
    if user is None:
        raise ApiError(404, "not_found", f"no user named {name!r}")
    if SOFT_LIMITS & set(changes):
        limits.wake_held(services().db, services().queue, user.id)
    return reply(user_out(user))


@operation(
    bp,
    "GET",
    USER_SESSIONS,
    summary="A user's status-page sessions, newest first",
    responses={200: SessionList},
    query=SessionsQuery,
    errors=(400, 404),
    tag="users",
)
def list_user_sessions(name: str) -> Response:
    """Live sessions (signed in at /login, not ended, not expired), or every one kept with
    `include_ended=true`. Admins may list anyone's; a user their own."""
    params = query(SessionsQuery)
    user = visible_user(name)
    rows = auth.list_sessions(services().db, user.id, include_ended=params.include_ended)
    return reply(SessionList(sessions=[session_out(row, user.name) for row in rows]))


@operation(
    bp,
    "DELETE",
    USER_SESSIONS,
    summary="End every live session of a user",
    responses={200: SessionsEnded},
    errors=(404,),
    tag="users",
)
def end_user_sessions(name: str) -> Response:
    """Their cookies stop working at once in this process, within SEQTRAIN_AUTH_CACHE_SECONDS
    everywhere; the user's tokens stay valid (revoke those with `seqtrain tokens revoke`)."""
    user = visible_user(name)
    return reply(SessionsEnded(ended=auth.end_sessions(services().db, user_id=user.id)))


@operation(
    bp,
    "DELETE",
    "/sessions/" + id_rule("session_id"),
    summary="End one session",
    responses={204: None},
    errors=(404,),
    tag="users",
)
def end_session(session_id: int) -> Response:
    """Admins may end anyone's session; a user their own. Ending an ended session is a no-op."""
    db = services().db
    row = auth.get_session(db, session_id)
    if row is None:
        raise ApiError(404, "not_found", f"session {session_id} not found")
    authorize(row.user_id, f"session {session_id}")
    auth.end_sessions(db, session_id=session_id)
    return Response(status=204)
