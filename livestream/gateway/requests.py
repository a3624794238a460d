"""A client's request, read and checked against the gateway spec, re-encoded for the runners.

The body is validated with the runner API's own models (so errors have the spec's 415/413/422
shapes), `model_id` is required where the gateway spec requires it, `metadata` is dropped, and
the body is encoded once so every try sends the same bytes.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import pydantic
from aiohttp import web

from ..api.bodies import BodyLimits, file_fields, read_json_body, read_multipart_body
from ..api.errors import ApiError, RequestValidationError
from ..api.schemas import UploadedFile
from .spec import GatewayRoute

__all__ = ["Forwarded", "encode_multipart", "read_forwarded"]

#: Fields the gateway spec removes: never sent on.
_DROPPED = frozenset({"metadata"})


@dataclass(frozen=True)
class Forwarded:
    route: GatewayRoute
    body: bytes
    content_type: str
    model_id: str
    stream: bool = False
    fps: int | None = None


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def encode_multipart(fields: dict[str, Any]) -> tuple[bytes, str]:
    """`fields` (strings and `UploadedFile`s) -> (body, content type)."""
    boundary = secrets.token_hex(16)
    out = bytearray()
    for name, value in fields.items():
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, UploadedFile):
            filename = value.filename.replace('"', "%22").replace("\r", "").replace("\n", "")
            out += f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
            out += f"Content-Type: {value.content_type}\r\n\r\n".encode()
            out += value.data
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += _form_value(value).encode()
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _missing(field: str, inputs: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "missing", "loc": ["body", field], "msg": "Field required", "input": inputs}])


async def read_forwarded(request: web.Request, route: GatewayRoute, limits: BodyLimits) -> Forwarded:
    if route.path.startswith("/v1/"):
        return await _read_openai(request, route, limits)
    model: pydantic.BaseModel
    if route.body_kind == "json":
        model = await read_json_body(request, route.body, limits)
    else:
        model = await read_multipart_body(request, route.body, limits, limits.file_limit(route.path))
    set_fields = model.model_fields_set - _DROPPED
    if route.model_required and route.model_field not in set_fields:
        raise _missing(route.model_field, None)
    model_id = str(getattr(model, route.model_field, "") or "")
    if route.model_required and not model_id:
        raise ApiError(400, f"{route.model_field} is required.")
    if route.body_kind == "json":
        data = model.model_dump(mode="json", include=set_fields)
        body, content_type = json.dumps(data).encode(), "application/json"
    else:
        files = file_fields(route.body)
        values = {name: getattr(model, name) for name in route.body.model_fields if name in set_fields or name in files}
        values = {k: v for k, v in values.items() if v is not None}
        body, content_type = encode_multipart(values)
    fps = getattr(model, "fps", None) if "fps" in set_fields else None
    return Forwarded(route, body, content_type, model_id, stream=bool(getattr(model, "stream", False)), fps=fps)


async def _read_openai(request: web.Request, route: GatewayRoute, limits: BodyLimits) -> Forwarded:
    """`/v1/chat/completions`: passed on as sent (OpenAI's body has more fields than ours)."""
    if request.content_length is not None and request.content_length > limits.json_bytes:
        raise ApiError(413, "Request body exceeds limit.")
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "Request body is not valid JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list) or not data["messages"]:
        raise ApiError(400, "messages: a non-empty list is required.")
    return Forwarded(route, raw, "application/json", str(data.get("model") or ""), stream=bool(data.get("stream")))
