"""Pages: sign in with a token, sign out, the status pages, and the API's own documents.

The status pages are shells: Jinja renders what the server knows at once (escaped), and
the scripts in static/js/ fill in and refresh the rest from the API (api/board.py, logs.py,
stream.py, workers.py, jobs.py) with the session cookie and its CSRF token. Every page is
rendered with autoescaping, the scripts write text with textContent, and the
Content-Security-Policy forbids inline script, so user-supplied text stays text.

/             jobs: filter, search, sort, pages, refreshed live
/jobs/<id>    one job: spec, timeline, progress, charts (SSE), logs, checkpoints, actions
/workers      workers, their devices and current job; queue depths
/submit       a spec as YAML or JSON, errors shown beside the line they concern
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import yaml
from flask import (
    Blueprint,
    Response,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from api import services
from api.auth import check_csrf, client_address, csrf_token, guard_failures
from api.errors import ApiError
from api.openapi import API_PREFIX, document, id_rule
from shared import auth, jobs
from shared.auth import Principal

bp = Blueprint("pages", __name__)
EXAMPLE_SPEC = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"
FALLBACK_SPEC = """\
name: quickstart-sentiment
task: classification
data:
  dataset: builtin:sentiment
model:
  type: lstm
training:
  epochs: 6
"""


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "signed_in_as": session.get("user_name")}


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages for a signed-in user: sets g.principal, or redirects to /login."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        user_id = session.get("user_id")
        principal = (
            auth.principal_for_user(services().db, user_id) if isinstance(user_id, int) else None
        )
        if principal is None:
            session.clear()
            return redirect(url_for(".login"))
        g.principal = principal
        return view(*args, **kwargs)

    return wrapper


def visible_job(job_id: int) -> Any:
    """The job if the signed-in user may see it, else None (the page says it was not found)."""
    principal: Principal = g.principal
    try:
        job = jobs.get_job(services().db, job_id)
    except jobs.JobNotFound:
        return None
    return job if principal.may_see(job.owner_id) else None


def spec_yaml(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, default_flow_style=False)


@bp.get("/")
@signed_in
def home() -> Any:
    return render_template("jobs.html", is_admin=g.principal.is_admin)


@bp.get("/jobs/" + id_rule("job_id"))
@signed_in
def job_page(job_id: int) -> Any:
    job = visible_job(job_id)
    if job is None:
        return render_template("missing.html", what=f"Job {job_id}"), 404
    return render_template("job.html", job=job, spec_text=spec_yaml(job.spec))


@bp.get("/workers")
@signed_in
def workers_page() -> Any:
    return render_template("workers.html")


@bp.get("/submit")
@signed_in
def submit_page() -> Any:
    """The submit form, prefilled with the quickstart example or (?from=<id>) a job's spec."""
    source = request.args.get("from", "")
    job = visible_job(int(source)) if source.isdigit() and len(source) < 19 else None
    if job is not None:
        text = spec_yaml(job.spec)
    else:
        text = EXAMPLE_SPEC.read_text() if EXAMPLE_SPEC.is_file() else FALLBACK_SPEC
    return render_template("submit.html", spec_text=text, source=job)


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
