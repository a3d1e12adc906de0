"""Pages: sign in with a token, sign out, the status page, and the API's own documents.

Forms carry the session's CSRF token; every page is rendered by Jinja with autoescaping,
and the Content-Security-Policy forbids inline script, so user-supplied text stays text.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request, session, url_for

from api import services
from api.auth import check_csrf, client_address, csrf_token, guard_failures
from api.errors import ApiError
from api.openapi import API_PREFIX, document
from shared import auth

bp = Blueprint("pages", __name__)


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "signed_in_as": session.get("user_name")}


@bp.get("/")
def home() -> Any:
    if "user_id" not in session:
        return redirect(url_for(".login"))
    return render_template("home.html")


@bp.get("/login")
def login() -> Any:
    return render_template("login.html", error=None)


@bp.post("/login")
def login_submit() -> Any:
    check_csrf(request.form.get("csrf_token"))
    limiter = services().limiter
    try:
        guard_failures(limiter)
    except ApiError as exc:
        return render_template("login.html", error=exc.message), 429
    principal = auth.authenticate(services().db, request.form.get("token", "").strip())
    if principal is None:
        limiter.record_failure(client_address())
        return render_template("login.html", error="Unknown or revoked token."), 401
    session.clear()  # a fresh session (and CSRF token) on sign-in
    session.permanent = True
    session.update(user_id=principal.user_id, user_name=principal.name)
    return redirect(url_for(".home"))


@bp.post("/logout")
def logout() -> Any:
    check_csrf(request.form.get("csrf_token"))
    session.clear()
    return redirect(url_for(".login"))


@bp.get(API_PREFIX + "/openapi.json")
def openapi() -> Response:
    return jsonify(document())


@bp.get(API_PREFIX + "/docs")
def docs() -> str:
    return render_template("docs.html", doc=document())
