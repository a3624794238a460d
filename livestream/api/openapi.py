"""The OpenAPI document, generated from the pydantic models and the route table.

It reproduces ai-runner's published runner spec (FastAPI's output) for every path, method,
operation id, request body kind and schema, plus the documented additions listed in
`operations.Operation.extra_errors` and `GET /version`.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic.json_schema import models_json_schema

from . import schemas as s
from .operations import OPERATIONS, Operation

__all__ = ["build_openapi", "component_schemas"]

_REF = "#/components/schemas/{model}"

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_BODY_CONTENT = {"json": "application/json", "multipart": "multipart/form-data"}


def _models() -> list[type[pydantic.BaseModel]]:
    models: list[type[pydantic.BaseModel]] = [s.HTTPError, s.HTTPValidationError]
    for op in OPERATIONS:
        if op.body is not None:
            models.append(op.body)
        models.append(op.response)
    return list(dict.fromkeys(models))


def _published(schema: Any) -> Any:
    """Publish optional fields as ai-runner does: `X | None = None` appears as plain `X`."""
    if isinstance(schema, list):
        return [_published(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _published(v) for k, v in schema.items()}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [v for v in any_of if v != {"type": "null"}]
        if len(rest) == 1:
            del out["anyOf"]
            out = {**rest[0], **out}
    if "default" in out and out["default"] is None:
        del out["default"]
    out.pop("propertyNames", None)
    return out


def component_schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in _models()], ref_template=_REF)
    defs = top.get("$defs", {})
    return {name: _published(defs[name]) for name in sorted(defs)}


def _ref(model: type[pydantic.BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation(op: Operation) -> dict[str, Any]:
    ok_schema: dict[str, Any] = _ref(op.response)
    if op.data_override:
        ok_schema["x-speakeasy-name-override"] = "data"
    responses: dict[str, Any] = {
        "200": {"description": "Successful Response", "content": {"application/json": {"schema": ok_schema}}}
    }
    for status in sorted({*op.spec_errors, *op.extra_errors}):
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": _ref(s.HTTPError)}},
        }
    if op.body is not None:
        responses["422"] = {
            "description": "Validation Error",
            "content": {"application/json": {"schema": _ref(s.HTTPValidationError)}},
        }
    out: dict[str, Any] = {}
    if op.body is not None:
        out["tags"] = ["generate"]
    out["summary"] = op.summary
    if op.description:
        out["description"] = op.description
    out["operationId"] = op.operation_id
    if op.body is not None and op.body_kind is not None:
        out["requestBody"] = {"content": {_BODY_CONTENT[op.body_kind]: {"schema": _ref(op.body)}}, "required": True}
    out["responses"] = responses
    if op.secured:
        out["security"] = [{"HTTPBearer": []}]
    if op.sdk_name:
        out["x-speakeasy-name-override"] = op.sdk_name
    return out


def build_openapi(version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Livepeer AI Runner", "description": "An application to run AI pipelines", "version": version},
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
    }
