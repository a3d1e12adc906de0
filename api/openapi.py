"""OpenAPI 3.1 generated from the routes and their pydantic models (never written by hand).

Routes register through `operation(...)`, which records the method, path, query model,
body model and response models; `document()` turns the records into the OpenAPI document
served at /api/v1/openapi.json.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from flask import Blueprint
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, JsonSchemaValue, models_json_schema
from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from api.schemas import MAX_ID, ErrorBody

if TYPE_CHECKING:
    from pydantic.dataclasses import PydanticDataclass

    # (model, "validation" or "serialization") -> its {"$ref": ...} in components.schemas
    Refs = dict[tuple[type[BaseModel] | type[PydanticDataclass], JsonSchemaMode], JsonSchemaValue]

API_PREFIX = "/api/v1"
# A response: a JSON model, a media type (binary), (media type, model of each item) for a
# stream such as text/event-stream, or None (no body).
Response = type[BaseModel] | str | tuple[str, type[BaseModel]] | None
BINARY = "application/octet-stream"
ID_MAX = 2**63 - 1
_RULE_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


@dataclass
class Operation:
    method: str
    rule: str
    summary: str
    responses: dict[int, Response]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    form: type[BaseModel] | None = None  # multipart/form-data fields besides `file`
    errors: tuple[int, ...] = ()
    public: bool = False
    tag: str = "jobs"
    description: str = ""
    operation_id: str = field(default="")
    prefix: str = API_PREFIX


OPERATIONS: list[Operation] = []


class IdConverter(BaseConverter):
    """An id in a path: ASCII digits, 1..2^63-1. Anything else made of digits (0, a number
    past the 64-bit range, Unicode digits such as "２") is a 404 that says the id is
    invalid, never a database error or another row's answer."""

    regex = r"\d+"
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = int(value) if value.isascii() and len(value) <= 19 else 0
        if not 1 <= number <= ID_MAX:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise NotFound(
                f"invalid id {shown!r} in the URL: an id is a whole number from 1 to "
                f"{ID_MAX}, in ASCII digits"
            )
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


def id_rule(name: str) -> str:
    """A Flask rule part for a positive 64-bit id (register IdConverter as "id")."""
    return f"<id:{name}>"


def operation(
    bp: Blueprint,
    method: str,
    rule: str,
    *,
    summary: str,
    responses: dict[int, Response],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
    tag: str = "jobs",
    prefix: str = API_PREFIX,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a route on `bp` and record it for the OpenAPI document."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        view.public = public  # type: ignore[attr-defined]  # read by the auth hook
        auth_errors = () if public else (401, 403, 429)
        OPERATIONS.append(
            Operation(
                method=method.lower(),
                rule=rule,
                summary=summary,
                responses=responses,
                body=body,
                query=query,
                form=form,
                errors=tuple(sorted({*errors, *auth_errors, 503} - set(responses))),
                public=public,
                tag=tag,
                description=(view.__doc__ or "").strip(),
                operation_id=view.__name__,
                prefix=prefix,
            )
        )
        bp.add_url_rule(rule, view_func=view, methods=[method])
        return view

    return register


def openapi_path(rule: str, prefix: str = API_PREFIX) -> str:
    return prefix + _RULE_PARAM.sub(lambda m: "{" + m.group(2) + "}", rule)


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    params = []
    for converter, name in _RULE_PARAM.findall(rule):
        schema: dict[str, Any] = {"type": "string"}
        if converter == "id":
            schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    params = []
    for name, prop in schemas["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        param = {
            "name": name,
            "in": "query",
            "required": name in schemas.get("required", ()),
            "schema": prop,
        }
        if description:
            param["description"] = description
        params.append(param)
    return params


def document() -> dict[str, Any]:
    refs, components = _schemas(OPERATIONS)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(openapi_path(op.rule, op.prefix), {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Seqtrain API",
            "version": "1",
            "description": "Submit, watch and fetch PyTorch sequence-model training jobs. "
            "Authenticate with `Authorization: Bearer <token>` (`seqtrain tokens create NAME`).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _schemas(operations: list[Operation]) -> tuple[Refs, dict[str, Any]]:
    """The $ref of every model the operations use, and the schemas they point to."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        for m in op.responses.values():
            if isinstance(m, tuple):
                models.append((m[1], "serialization"))
            elif m is not None and not isinstance(m, str):
                models.append((m, "serialization"))
    refs, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return refs, defs.get("$defs", {})


def _operation(op: Operation, refs: Refs) -> dict[str, Any]:
    """One operation object: parameters, request body, responses and security."""
    entry: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _path_parameters(op.rule),
        "responses": _responses(op, refs),
    }
    if op.description:
        entry["description"] = op.description
    if op.query is not None:
        # A query field's enum (JobStatus) is one of the components the responses use too.
        schema = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
        entry["parameters"] += _query_parameters(op.query, schema)
    if op.body is not None:
        entry["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.form is not None:
        entry["requestBody"] = _form_body(op.form)
    if op.public:
        entry["security"] = []
    return entry


def _responses(op: Operation, refs: Refs) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in op.responses.items():
        if model is None:
            responses[str(status)] = {"description": HTTPStatus(status).phrase}
            continue
        if isinstance(model, tuple):
            content = {model[0]: {"schema": refs[(model[1], "serialization")]}}
        elif isinstance(model, str):
            content = {model: {"schema": {"type": "string", "format": "binary"}}}
        else:
            content = {"application/json": {"schema": refs[(model, "serialization")]}}
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": content}
    for status in op.errors:
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}},
        }
    return responses


def _form_body(form: type[BaseModel]) -> dict[str, Any]:
    """A multipart/form-data body: the uploaded `file` and the form model's fields."""
    fields = form.model_json_schema()
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **fields["properties"],
                    },
                    "required": ["file", *fields.get("required", [])],
                    "additionalProperties": False,
                }
            }
        },
    }
