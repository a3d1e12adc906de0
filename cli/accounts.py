"""Users and their limits, API tokens and status-page sessions: `seqtrain users`,
`seqtrain tokens` and `seqtrain sessions`, which talk to DATABASE_URL directly (run them
where the service runs)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cli.common import database, fail, json_option, settings


@click.group()
def users() -> None:
    """Manage users (talks to DATABASE_URL directly; run it where the service runs)."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see and manage every user's jobs.")
@json_option
def users_create(name: str, admin: bool, as_json: bool) -> None:
    """Create a user."""
    from shared.auth import AuthError, create_user

    try:
        user = create_user(database(), name, is_admin=admin)
    except AuthError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps({"id": user.id, "name": user.name, "is_admin": user.is_admin}))
        return
    click.echo(f"user {user.name} created (id {user.id}{', admin' if admin else ''})")


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """List users and their limits (shown only where set)."""
    from shared.auth import list_users
    from shared.limits import LIMITS

    rows = [user_row(u) for u in list_users(database())]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(
            f"{row['id']:>4}  {row['name']}{'  (admin)' if row['is_admin'] else ''}"
            + "".join(f"  {name}={row[name]}" for name in LIMITS if row[name] is not None)
        )


def user_row(user: Any) -> dict[str, Any]:
    from shared.limits import LIMITS

    return {
        "id": user.id,
        "name": user.name,
        "is_admin": user.is_admin,
        **{name: getattr(user, name) for name in LIMITS},
    }


def limit_option(name: str, help_text: str) -> Any:
    return click.option(f"--{name.replace('_', '-')}", name, metavar="N|none", help=help_text)


def limit_changes(options: dict[str, str | None]) -> dict[str, int | None]:
    """The limits the options name (`none`: no limit), checked as the API checks them."""
    from pydantic import ValidationError

    from shared.limits import Limits

    changes: dict[str, int | None] = {}
    for limit, value in options.items():
        option = f"--{limit.replace('_', '-')}"
        if value is None:
            continue
        if value.strip().lower() == "none":
            changes[limit] = None
            continue
        try:
            changes[limit] = int(value)
        except ValueError:
            fail(f"{option}: {value!r} is not a whole number or 'none'")
    if not changes:
        fail("name a limit: --max-priority, --max-running, --max-devices or --max-queued")
    try:
        Limits.model_validate(changes)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        fail(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}")
    return changes


@users.command("set")
@click.argument("name")
@limit_option("max_priority", "Highest resources.priority the user may submit (0-100).")
@limit_option("max_running", "Jobs running at once; further jobs wait queued.")
@limit_option("max_devices", "Devices in use at once; further jobs wait queued.")
@limit_option("max_queued", "Jobs waiting at once; past it a submission is a 429.")
@json_option
def users_set(name: str, as_json: bool, **options: str | None) -> None:
    """Set NAME's limits (`none` clears one; those not named stay as they are)."""
    from shared.infra.queue import JobQueue
    from shared.limits import LIMITS, SOFT_LIMITS, set_limits, wake_held

    db, changes = database(), limit_changes(options)
    user = set_limits(db, name, changes)
    if user is None:
        fail(f"no user named {name!r}")
    if SOFT_LIMITS & set(changes) and not wake_held(db, JobQueue(settings()), user.id):
        click.echo(
            "Redis unreachable: jobs the limit held start at the reconciler's next pass", err=True
        )
    row = user_row(user)
    if as_json:
        click.echo(json.dumps(row))
        return
    shown = ", ".join(f"{limit} {'none' if row[limit] is None else row[limit]}" for limit in LIMITS)
    click.echo(f"user {name}: {shown}")


@click.group()
def tokens() -> None:
    """Manage API tokens (talks to DATABASE_URL directly)."""


@tokens.command("create")
@click.argument("user")
@click.option("--label", default="", help="A note to tell tokens apart.")
@json_option
def tokens_create(user: str, label: str, as_json: bool) -> None:
    """Create a token for USER and print it (shown once; only a hash is stored)."""
    from shared.auth import AuthError, create_token

    try:
        row, token = create_token(database(), user, label)
    except AuthError as exc:
        fail(str(exc))
    click.echo(
        json.dumps({"id": row.id, "user": user, "label": label, "token": token})
        if as_json
        else token
    )


@tokens.command("list")
@click.argument("user")
@json_option
def tokens_list(user: str, as_json: bool) -> None:
    """List USER's tokens (prefixes only)."""
    from shared.auth import list_tokens

    rows = list_tokens(database(), user)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "prefix": r.prefix,
                        "label": r.label,
                        "created_at": r.created_at.isoformat(),
                        "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
                        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                    }
                    for r in rows
                ]
            )
        )
        return
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.id:>4}  {row.prefix}...  {state:<8} {row.label}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
@json_option
def tokens_revoke(token_id: int, as_json: bool) -> None:
    """Revoke a token by id (see `tokens list`)."""
    from shared.auth import revoke_token

    if not revoke_token(database(), token_id):
        fail(f"no active token with id {token_id}")
    click.echo(
        json.dumps({"id": token_id, "revoked": True}) if as_json else f"token {token_id} revoked"
    )


@click.group()
def sessions() -> None:
    """List and end status-page sessions (talks to DATABASE_URL directly)."""


@sessions.command("list")
@click.argument("user")
@click.option("--all", "include_ended", is_flag=True, help="Also ended and expired sessions.")
@json_option
def sessions_list(user: str, include_ended: bool, as_json: bool) -> None:
    """List USER's live sessions (signed in at /login), newest first."""
    from shared.auth import get_user, list_sessions
    from shared.infra.models import utcnow

    db = database()
    found = get_user(db, user)
    if found is None:
        fail(f"no user named {user!r}")
    now = utcnow()
    rows = [
        {
            "id": r.id,
            "token_id": r.token_id,
            "address": r.address,
            "created_at": r.created_at.isoformat(),
            "last_seen_at": r.last_seen_at.isoformat(),
            "expires_at": r.expires_at.isoformat(),
            "ended_at": r.ended_at.isoformat() if r.ended_at else None,
            "active": r.ended_at is None and r.expires_at > now,
        }
        for r in list_sessions(db, found.id, include_ended=include_ended)
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = "active" if row["active"] else ("ended" if row["ended_at"] else "expired")
        click.echo(
            f"{row['id']:>4}  {state:<8} token {row['token_id']:<4} {row['address']:<15} "
            f"since {row['created_at'][:19]}  last seen {row['last_seen_at'][:19]}"
        )


@sessions.command("end")
@click.argument("session_ids", nargs=-1, type=int)
@click.option("--user", default=None, help="End every live session of this user.")
@json_option
def sessions_end(session_ids: tuple[int, ...], user: str | None, as_json: bool) -> None:
    """End sessions by id (see `sessions list`), or all of a user's with --user. API
    processes refuse them within SEQTRAIN_AUTH_CACHE_SECONDS."""
    from shared.auth import end_sessions, get_user

    if not session_ids and user is None:
        fail("name session ids, or --user NAME")
    db = database()
    ended = [i for sid in session_ids for i in end_sessions(db, session_id=sid)]
    if user is not None:
        found = get_user(db, user)
        if found is None:
            fail(f"no user named {user!r}")
        ended += end_sessions(db, user_id=found.id)
    missing = sorted(set(session_ids) - set(ended))
    if as_json:
        click.echo(json.dumps({"ended": ended, "not_live": missing}))
    else:
        click.echo(f"{len(ended)} session(s) ended" + (f"; not live: {missing}" if missing else ""))
    if missing:
        sys.exit(1)
