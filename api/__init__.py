"""The HTTP API and pages: a Flask app factory and its blueprints.

errors.py       one JSON error shape for every failure: {"error": {code, message, fields}}
auth.py         bearer tokens, page sessions, CSRF, failed-sign-in limiting, ownership checks
sessions.py     /api/v1/users (an admin lists them and sets their limits), and
                /api/v1/users/<name>/sessions, /api/v1/sessions/<id>: list and end sign-ins
openapi.py      route registry -> the OpenAPI 3.1 document (generated from the pydantic models)
schemas.py      response and query models
inference_schemas.py  the inference routes' requests and answers (predict, generate, translate)
http.py         what the blueprints share: JSON body, query parameters, owned job, reply
jobs.py         /api/v1/jobs: submit, retry, list, detail, metrics, samples, checkpoints, cancel
submissions.py  how a job is created: Idempotency-Key, placement check, group commit
batching.py     the group commit: concurrent requests share one flush
datasets.py     /api/v1/datasets: upload (multipart), list, detail with statistics, delete
models.py       /api/v1/models: pretrained base models: upload, list, detail, share, delete
inference.py    /api/v1/jobs/<id>/predict, /generate and /translate (torch imported on first use)
outputs.py      /api/v1/jobs/<id>/predictions and /api/v1/outputs: work on a trained job
                through the queue (batch predictions, exports), progress, cancel, download
exports.py      /api/v1/jobs/<id>/exports: a bundle of a trained job (weights, ONNX, a card)
reports.py      /api/v1/jobs/<id>/report: a finished job's evaluation report
compare.py      /api/v1/compare?jobs=...: final and best metrics, spec differences
sweeps.py       /api/v1/sweeps: hyperparameter sweeps: submit, list, detail with trials, cancel
predictor.py    loaded checkpoints for inference, cached per process
board.py        /api/v1/jobs/board: the jobs page's rows with progress and latest metrics
logs.py         /api/v1/jobs/<id>/logs (an attempt's output, by offset) and /events
stream.py       /api/v1/jobs/<id>/stream: server-sent events of metrics and status, capped
                per user
offload.py      torch work on native threads under gunicorn's gevent workers
workers.py      /api/v1/workers: workers, their devices and current jobs; queue depths
tensorboard.py  /api/v1/jobs/<id>/tensorboard: the event files as one .tar.gz
health.py       /healthz (open): database and Redis reachability
metrics.py      /metrics for Prometheus (loopback, or SEQTRAIN_METRICS_TOKEN)
stats.py        the figures /metrics reads from SQL at each scrape
pages.py        /login, /logout, the status pages (jobs, job, workers, submit), /api/v1/docs
wsgi.py         `app` for gunicorn: gunicorn -k gevent 'api.wsgi:app'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response, current_app
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from shared.auth import PrincipalCache
from shared.infra.db import Database
from shared.infra.queue import JobQueue
from shared.infra.storage import ArtifactStore, open_store
from shared.settings import Settings

if TYPE_CHECKING:
    from api.submissions import Submissions

SECURITY_HEADERS = {
    # No inline script or style anywhere: user-supplied text can never run.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, opened only when the request carries the cookie: an
    API call with a bearer token builds no signer. A page that writes to the session still
    gets its cookie, since an empty session that is modified is saved as usual."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


@dataclass
class Services:
    settings: Settings
    db: Database
    queue: JobQueue
    store: ArtifactStore
    limiter: Any  # api.auth.FailureLimiter
    tokens: PrincipalCache
    submissions: Submissions


def services() -> Services:
    svc: Services = current_app.extensions["seqtrain"]
    return svc


def register_routes(app: Flask) -> None:
    """The error handlers and every blueprint."""
    from api import (
        board,
        compare,
        datasets,
        errors,
        exports,
        health,
        inference,
        jobs,
        logs,
        metrics,
        models,
        outputs,
        pages,
        reports,
        sessions,
        stream,
        sweeps,
        tensorboard,
        workers,
    )

    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(datasets.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(inference.bp)
    app.register_blueprint(outputs.bp)
    app.register_blueprint(exports.bp)
    app.register_blueprint(reports.bp)
    app.register_blueprint(compare.bp)
    app.register_blueprint(sweeps.bp)
    app.register_blueprint(sessions.bp)
    for live in (board, logs, stream, workers, tensorboard):  # what the status pages read
        app.register_blueprint(live.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(metrics.bp)


def security_headers(response: Response) -> Response:
    headers = response.headers
    present = {name.lower() for name, _ in headers}  # one pass, not one scan per header
    for name, value in SECURITY_HEADERS.items():
        if name.lower() not in present:
            headers.add(name, value)
    if response.mimetype == "application/json" and "cache-control" not in present:
        headers.add("Cache-Control", "no-store")
    return response


def create_app(settings: Settings | None = None, config: dict[str, Any] | None = None) -> Flask:
    from api.auth import FailureLimiter
    from api.openapi import IdConverter
    from api.submissions import Submissions

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.session_secret(),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_NAME="seqtrain_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=int(settings.session_hours * 3600),
    )
    if config:
        app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.session_interface = CookieSessions()
    # No ping per checkout: one per connection idle 10 s or more (see shared.infra.db).
    db = Database(settings.database_url, ping_after_idle=10.0)
    queue = JobQueue(settings)
    app.extensions["seqtrain"] = Services(
        settings=settings,
        db=db,
        queue=queue,
        store=open_store(settings),
        limiter=FailureLimiter(settings.redis_url, settings.auth_failure_limit),
        tokens=PrincipalCache(
            float(app.config.get("AUTH_CACHE_SECONDS", settings.auth_cache_seconds))
        ),
        submissions=Submissions(db, queue, settings.submit_batch, settings),
    )
    app.url_map.converters["id"] = IdConverter
    register_routes(app)
    app.after_request(security_headers)
    logging.getLogger("seqtrain").setLevel(logging.INFO)
    return app
