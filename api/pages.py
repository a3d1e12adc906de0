"""Pages: sign in with a token, sign out, the status pages, and the API's own documents.

The status pages are shells: Jinja renders what the server knows at once (escaped), and
the scripts in static/js/ fill in and refresh the rest from the API (api/board.py, logs.py,
stream.py, workers.py, jobs.py) with the session cookie and its CSRF token. Every page is
rendered with autoescaping, the scripts write text with textContent, and the
Content-Security-Policy forbids inline script, so user-supplied text stays text.

/             jobs: filter, search, sort, pages, refreshed live
/jobs/<id>    one job: spec, timeline, progress, charts (SSE), logs, checkpoints, actions,
              its evaluation report; while queued its place in the queue and why it waits
/compare      2 to 8 jobs (?jobs=3,5,9): curves overlaid, final and best metrics, spec diff
/sweeps       sweeps: status, trials done, best value, refreshed live
/sweeps/<id>  one sweep: settings, best trial (clone it as a job), trials, charts, cancel
/workers      workers, their devices and what each holds (job, owner, priority, since
              when, or a multi-node rank); queue depths
/models       the pretrained base models the viewer can use (rendered on the server)
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
from api.auth import (
    SESSION_ID,
    check_csrf,
    check_token,
    client_address,
    csrf_token,
    page_principal,
)
from api.errors import ApiError
from api.models import page_rows
from api.openapi import API_PREFIX, document, id_rule
from shared import auth, jobs
from shared.auth import Principal
from shared.hub import registry as hub
from shared.jobs import waiting
from shared.protocol import JobStatus
from shared.sweeps import store as sweep_store

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
    principal = g.get("principal")
    return {"csrf_token": csrf_token, "signed_in_as": principal.name if principal else None}


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages for a signed-in user: sets g.principal, or redirects to /login."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        svc = services()
        principal = page_principal(svc.db, svc.tokens)
        if principal is None:
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
    svc = services()
    base = hub.get_model(svc.db, job.base_model_id) if job.base_model_id else None
    wait = (
        waiting.queue_wait(svc.db, svc.settings, job_id) if job.status == JobStatus.QUEUED else None
    )
    return render_template("job.html", job=job, spec_text=spec_yaml(job.spec), base=base, wait=wait)


@bp.get("/compare")
@signed_in
def compare_page() -> Any:
    """A shell: the script reads ?jobs= and fills the page from /api/v1/compare."""
    return render_template("compare.html")


@bp.get("/sweeps")
@signed_in
def sweeps_page() -> Any:
    return render_template("sweeps.html", is_admin=g.principal.is_admin)


@bp.get("/sweeps/" + id_rule("sweep_id"))
@signed_in
def sweep_page(sweep_id: int) -> Any:
    """A shell: the script fills the page from /api/v1/sweeps/<id> and polls it while the
    sweep runs. Another user's sweep is missing, as one that does not exist."""
    try:
        sweep = sweep_store.get_sweep(services().db, sweep_id)
    except sweep_store.SweepNotFound:
        sweep = None
    if sweep is None or not g.principal.may_see(sweep.owner_id):
        return render_template("missing.html", what=f"Sweep {sweep_id}"), 404
    return render_template("sweep.html", sweep=sweep)


@bp.get("/workers")
@signed_in
def workers_page() -> Any:
    return render_template("workers.html")


@bp.get("/models")
@signed_in
def models_page() -> Any:
    return render_template("models.html", models=page_rows(g.principal))


@bp.get("/submit")
@signed_in
def submit_page() -> Any:
    """The submit form, prefilled with the quickstart example or (?from=<id>) a job's spec."""
    source = request.args.get("from", "")
    ascii_id = source.isascii() and source.isdigit() and len(source) < 19
    job = visible_job(int(source)) if ascii_id else None
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
    """Sign in with a token: a new session row, tied to the token, and a fresh cookie (and
    CSRF token). A session this browser had before ends."""
    check_csrf(request.form.get("csrf_token"))
    svc = services()
    try:
        principal = check_token(svc.db, svc.limiter, request.form.get("token", "").strip())
    except ApiError as exc:
        message = "Unknown or revoked token." if exc.status == 401 else exc.message
        headers = {k: v for k, v in exc.headers.items() if k == "Retry-After"}
        return render_template("login.html", error=message), exc.status, headers
    if previous := session.get(SESSION_ID):
        auth.end_sessions(svc.db, secret=str(previous))
    _, secret = auth.create_session(svc.db, principal, svc.settings.session_hours, client_address())
    session.clear()
    session.permanent = True
    session[SESSION_ID] = secret
    return redirect(url_for(".home"))


@bp.post("/logout")
def logout() -> Any:
    """Sign out: the session ends on the server, so a copy of the cookie stops working too."""
    check_csrf(request.form.get("csrf_token"))
    if secret := session.get(SESSION_ID):
        auth.end_sessions(services().db, secret=str(secret))
    session.clear()
    return redirect(url_for(".login"))


@bp.get(API_PREFIX + "/openapi.json")
def openapi() -> Response:
    return jsonify(document())


@bp.get(API_PREFIX + "/docs")
def docs() -> str:
    return render_template("docs.html", doc=document())
