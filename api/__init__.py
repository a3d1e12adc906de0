"""The HTTP API: a Flask app factory and its blueprints.

errors.py   one JSON error shape for every failure: {"error": {code, message, fields}}
jobs.py     /api/v1/jobs: submit, list, detail, metrics, checkpoints (+ download), cancel
health.py   /healthz: database and Redis reachability
views.py    serializers from ORM rows to JSON
wsgi.py     `app` for gunicorn: gunicorn -k gthread 'api.wsgi:app'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from shared.db import Database
from shared.queue import JobQueue
from shared.settings import Settings
from shared.storage import ArtifactStore


@dataclass
class Services:
    settings: Settings
    db: Database
    queue: JobQueue
    store: ArtifactStore


def services() -> Services:
    svc: Services = current_app.extensions["seqtrain"]
    return svc


def create_app(settings: Settings | None = None, config: dict[str, Any] | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=1 << 20,  # 1 MiB: a spec is a few hundred bytes
    )
    if config:
        app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["seqtrain"] = Services(
        settings=settings,
        db=Database(settings.database_url),
        queue=JobQueue(settings),
        store=ArtifactStore(settings.artifact_root),
    )

    from api import errors, health, jobs

    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp, url_prefix="/api/v1")
    logging.getLogger("seqtrain").setLevel(logging.INFO)
    return app
