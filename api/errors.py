"""One JSON error shape everywhere:

{"error": {"code": "validation_error", "message": "...",
           "fields": [{"path": "model.type", "message": "...", "type": "literal_error"}]}}
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Flask, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from shared.infra.listing import NAME_PATTERN
from shared.jobs import InvalidTransition, JobNotFound
from shared.spec import PRINTABLE

log = logging.getLogger("seqtrain.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields, self.headers = fields or [], headers or {}


def error_body(
    code: str, message: str, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or []}}


def field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


# What a failed validation of each request model is called in the error's message.
INVALID = {
    "JobSpec": "invalid job spec",
    "DatasetUpload": "invalid dataset options",
    "ModelUpload": "invalid model options",
    "ShareModel": "invalid sharing request",
    "PredictRequest": "invalid prediction request",
    "GenerateRequest": "invalid generation request",
    "TranslateRequest": "invalid translation request",
}


_BOUNDS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def _not_finite(err: Any) -> bool:
    """NaN or an infinity where a bounded number was expected: no bound explains it."""
    value = err.get("input")
    return err["type"] in _BOUNDS and isinstance(value, float) and not math.isfinite(value)


def _message(err: Any) -> str:
    pattern = (
        err.get("ctx", {}).get("pattern") if err["type"] == "string_pattern_mismatch" else None
    )
    if pattern == PRINTABLE:
        return "must not contain control characters"
    if pattern == NAME_PATTERN:
        return "must not contain control characters or ':'"
    if _not_finite(err):
        return f"must be a finite number, not {err['input']}"
    return str(err["msg"]).removeprefix("Value error, ")


def validation_fields(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "path": field_path(err["loc"]),
            "message": _message(err),
            "type": "finite_number" if _not_finite(err) else err["type"],
        }
        for err in exc.errors(include_url=False)
    ]


def validation_message(exc: ValidationError, fields: list[dict[str, str]]) -> str:
    """ "invalid job spec: training.lr", "invalid dataset options: name", ..."""
    paths = ", ".join(f["path"] or "(body)" for f in fields)
    return f"{INVALID.get(exc.title, 'invalid request')}: {paths}"


def _json_error(
    status: int, code: str, message: str, fields: Any = None, headers: Any = None
) -> Any:
    response = jsonify(error_body(code, message, fields))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        return _json_error(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Any:
        fields = validation_fields(exc)
        return _json_error(422, "validation_error", validation_message(exc, fields), fields)

    @app.errorhandler(JobNotFound)
    def _not_found(exc: JobNotFound) -> Any:
        return _json_error(404, "not_found", str(exc))

    @app.errorhandler(InvalidTransition)
    def _conflict(exc: InvalidTransition) -> Any:
        return _json_error(409, "conflict", str(exc))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def _database_down(exc: Exception) -> Any:
        # Connection-level failures only; a bad query is a bug and stays a 500.
        log.warning("database unavailable: %s", type(exc).__name__)
        return _json_error(
            503,
            "database_unavailable",
            "the database is unavailable; retry shortly",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _json_error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return _json_error(500, "internal_error", "internal server error")
