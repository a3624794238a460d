"""Request bodies: JSON and multipart parsing into the spec's models, with FastAPI's 422 shape.

Limits: a JSON body, each uploaded file and each multipart text field has a size limit
(413 `File size exceeds limit.` for files, as ai-runner answers). A JSON route given another
content type, or a multipart route given anything but a form (`multipart/form-data`, or
`application/x-www-form-urlencoded`, which cannot carry the upload), answers 415.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import pydantic
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import ApiError, RequestValidationError
from .schemas import UploadedFile

__all__ = ["BodyLimits", "file_fields", "read_json_body", "read_multipart_body"]

M = TypeVar("M", bound=pydantic.BaseModel)

_MiB = 1024 * 1024
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class BodyLimits:
    """Size limits of request bodies, in bytes."""

    #: A whole JSON body (ComfyUI workflows in live params and long LLM chats fit easily).
    json_bytes: int = 16 * _MiB
    #: One uploaded file: ai-runner's limit for audio-to-text and image-to-text, here for every route.
    file_bytes: int = 50 * _MiB
    #: One multipart text field (SAM2's `mask_input` is a 256x256 JSON array).
    field_bytes: int = 8 * _MiB
    #: A whole multipart body (all parts together); the engine app's own body limit.
    multipart_bytes: int = 64 * _MiB
    #: Route path -> file limit, overriding `file_bytes` for that route.
    route_file_bytes: Mapping[str, int] = field(default_factory=dict)

    def file_limit(self, path: str) -> int:
        return self.route_file_bytes.get(path, self.file_bytes)


def _media_type(header: str) -> tuple[str, str]:
    message = Message()
    message[hdrs.CONTENT_TYPE] = header
    return message.get_content_maintype(), message.get_content_subtype()


def _is_json(header: str | None) -> bool:
    if header is None:
        return True  # FastAPI reads a body without a content type as JSON
    main, sub = _media_type(header)
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "Request body exceeds limit.")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, "Request body exceeds limit.")
    return bytes(buf)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return None  # files and other objects are not echoed back


def _errors(exc: pydantic.ValidationError, inputs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Pydantic errors in FastAPI's shape: `loc` prefixed with "body", JSON-safe `input`/`ctx`."""
    out: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        item: dict[str, Any] = {"type": err["type"], "loc": ["body", *loc], "msg": err["msg"]}
        if inputs is None:
            item["input"] = _jsonable(err.get("input"))
        else:  # multipart: FastAPI validates field by field, so `input` is the field's own value
            item["input"] = _jsonable(inputs.get(str(loc[0]))) if loc else None
        if ctx := err.get("ctx"):
            item["ctx"] = {k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in ctx.items()}
        out.append(item)
    return out


async def read_json_body(request: web.Request, model: type[M], limits: BodyLimits) -> M:
    if not _is_json(request.headers.get(hdrs.CONTENT_TYPE)):
        raise ApiError(415, "Unsupported Media Type: expected application/json.")
    raw = await _read_limited(request, limits.json_bytes)
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        pos = getattr(exc, "pos", getattr(exc, "start", 0))
        reason = getattr(exc, "msg", getattr(exc, "reason", str(exc)))
        error = {"type": "json_invalid", "loc": ["body", pos], "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": reason}}]) from None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise RequestValidationError(_errors(exc)) from None


def file_fields(model: type[pydantic.BaseModel]) -> frozenset[str]:
    """Names of the fields of `model` that are file uploads."""
    return frozenset(name for name, f in model.model_fields.items() if f.annotation is UploadedFile)


async def _read_part(part: BodyPartReader, limit: int, msg: str, budget: list[int]) -> bytes:
    buf = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        buf += chunk
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise ApiError(413, "File size exceeds limit.")
        if len(buf) > limit:
            raise ApiError(413, msg)
    return bytes(buf)


async def read_multipart_body(
    request: web.Request, model: type[M], limits: BodyLimits, file_limit: int | None = None
) -> M:
    header = request.headers.get(hdrs.CONTENT_TYPE)
    media_type = _media_type(header) if header is not None else None
    file_limit = limits.file_bytes if file_limit is None else file_limit
    files = file_fields(model)
    values: dict[str, Any] = {}
    if media_type == ("application", "x-www-form-urlencoded"):
        # A form without files, as FastAPI also accepts it: the missing upload is then a 422.
        raw = await _read_limited(request, limits.field_bytes)
        values.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    elif media_type != ("multipart", "form-data"):
        raise ApiError(415, "Unsupported Media Type: expected multipart/form-data.")
    else:
        await _read_multipart(request, values, frozenset(model.model_fields), limits, file_limit)
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as exc:
        # Missing files are reported as FastAPI does; text given where a file was expected too.
        inputs = {k: v for k, v in values.items() if k not in files or isinstance(v, str)}
        raise RequestValidationError(_errors(exc, inputs)) from None


async def _read_multipart(
    request: web.Request, values: dict[str, Any], fields: frozenset[str], limits: BodyLimits, file_limit: int
) -> None:
    """Read the parts of the model's fields into `values`; other parts are read and dropped."""
    # Over the whole-body budget answers as ai-runner does for an upload that is too large.
    if request.content_length is not None and request.content_length > limits.multipart_bytes:
        raise ApiError(413, "File size exceeds limit.")
    budget = [limits.multipart_bytes]
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(415, "Unsupported Media Type: nested multipart bodies are not supported.")
            name = part.name
            if part.filename is not None:
                data = await _read_part(part, file_limit, "File size exceeds limit.", budget)
                if name in fields:
                    content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
                    values[name] = UploadedFile(filename=part.filename, content_type=content_type, data=data)
            else:
                data = await _read_part(part, limits.field_bytes, "Form field exceeds limit.", budget)
                if name in fields:
                    charset = part.get_charset(default="utf-8")
                    try:
                        values[name] = data.decode(charset)
                    except (UnicodeDecodeError, LookupError):
                        values[name] = data.decode("utf-8", "replace")
    except ValueError as exc:  # malformed multipart framing
        raise ApiError(400, f"Malformed multipart body: {exc}") from None
    except HttpProcessingError as exc:  # a part header aiohttp refuses (InvalidHeader: bytes not allowed in headers)
        raise ApiError(400, f"Malformed multipart body: bad part header: {exc.message}") from None
