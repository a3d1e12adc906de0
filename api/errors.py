"""One JSON error shape everywhere:

{"error": {"code": "validation_error", "message": "...", "fields": [{"path": "model.type", "message": "..."}]}}
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from shared.jobs import InvalidTransition, JobNotFound

log = logging.getLogger("seqtrain.api")


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or []


def error_body(
    code: str, message: str, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or []}}


def field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validation_fields(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "path": field_path(err["loc"]),
            "message": err["msg"].removeprefix("Value error, "),
            "type": err["type"],
        }
        for err in exc.errors(include_url=False)
    ]


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        return jsonify(error_body(exc.code, exc.message, exc.fields)), exc.status

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Any:
        fields = validation_fields(exc)
        paths = ", ".join(f["path"] or "(body)" for f in fields)
        return jsonify(error_body("validation_error", f"invalid job spec: {paths}", fields)), 422

    @app.errorhandler(JobNotFound)
    def _not_found(exc: JobNotFound) -> Any:
        return jsonify(error_body("not_found", str(exc))), 404

    @app.errorhandler(InvalidTransition)
    def _conflict(exc: InvalidTransition) -> Any:
        return jsonify(error_body("conflict", str(exc))), 409

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def _database_down(exc: Exception) -> Any:
        log.warning("database error: %s", type(exc).__name__)
        response = jsonify(
            error_body("database_unavailable", "the database is unavailable; retry shortly")
        )
        response.headers["Retry-After"] = "5"
        return response, 503

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error_body(code, exc.description or exc.name)), exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return jsonify(error_body("internal_error", "internal server error")), 500
