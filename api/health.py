"""/healthz (open): 200 when the database and Redis answer, 503 naming the one that does not."""

from __future__ import annotations

from flask import Blueprint, Response
from sqlalchemy import text

from api import services
from api.openapi import operation
from api.schemas import Health

bp = Blueprint("health", __name__)


@operation(
    bp,
    "GET",
    "/healthz",
    summary="Database and Redis reachability",
    prefix="",
    responses={200: Health, 503: Health},
    public=True,
    tag="service",
)
def healthz() -> Response:
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable ({type(exc).__name__})"
    try:
        with svc.queue.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable ({type(exc).__name__})"
    healthy = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if healthy else "degraded", **checks)
    return Response(
        body.model_dump_json(), status=200 if healthy else 503, mimetype="application/json"
    )
