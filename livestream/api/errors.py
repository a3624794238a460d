"""HTTP errors of the runner API, mapped to the spec's shapes in one place.

- `{"detail": {"msg": "..."}}` (`HTTPError`) for 400/401/404/405/413/415/500/503;
- `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` (`HTTPValidationError`) for 422.

Pipeline errors (`pipelines.errors`) map as that module documents. Paths under
`PASSTHROUGH_PREFIXES` (the trickle server, which answers in plain text and with status 470)
are left entirely alone, and so is every response a handler returns: only raised exceptions
are reshaped, and of aiohttp's HTTP errors only those with aiohttp's plain-text body (a raised
error whose handler chose another body type, such as WHIP's SDP, keeps it).
"""

from __future__ import annotations

import json
import sys
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import hdrs, web

from pipelines.errors import (
    InferenceError,
    InvalidRequestError,
    JobCancelled,
    ModelLoadError,
    ModelMismatchError,
    ModelNotFoundError,
    PipelineBusyError,
    PipelineError,
    PipelineNotAvailableError,
    UnsupportedMediaError,
)

__all__ = [
    "PASSTHROUGH_PREFIXES",
    "ApiError",
    "RequestValidationError",
    "error_middleware",
    "json_error",
]

log = logging.getLogger(__name__)

#: Paths whose protocol has its own error answers. Must include livestream.app.TRICKLE_BASE_PATH.
PASSTHROUGH_PREFIXES: tuple[str, ...] = ("/ai/trickle/",)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PIPELINE_STATUS: tuple[tuple[type[PipelineError], int, str], ...] = (
    (UnsupportedMediaError, 415, "Unsupported media format or malformed file."),
    (InvalidRequestError, 400, "Invalid request."),
    (ModelMismatchError, 400, "Model mismatch."),
    (ModelNotFoundError, 400, "Model not found."),
    (PipelineNotAvailableError, 503, "Pipeline not available."),
    (PipelineBusyError, 503, "Pipeline busy; try again later."),
    # The deployment's doing (not cached, no network), not the server's: 503, as for a busy model.
    (ModelLoadError, 503, "Model could not be loaded."),
    (JobCancelled, 503, "Job cancelled: the engine is stopping."),
    (InferenceError, 500, "Pipeline error."),
)


class ApiError(Exception):
    """Raise from a handler to answer `{"detail": {"msg": msg}}` with `status`."""

    def __init__(self, status: int, msg: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.headers = dict(headers or {})


class RequestValidationError(Exception):
    """The request body failed validation: answered 422 with FastAPI's error list."""

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = list(errors)


def json_error(status: int, msg: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"detail": {"msg": msg}}).encode(),
        content_type="application/json",
        headers=headers,
    )


def _validation_response(errors: Sequence[Mapping[str, Any]]) -> web.Response:
    body = json.dumps({"detail": list(errors)}, default=str).encode()
    return web.Response(status=422, body=body, content_type="application/json")


def _pipeline_response(exc: PipelineError) -> web.Response:
    for cls, status, fallback in _PIPELINE_STATUS:
        if isinstance(exc, cls):
            return json_error(status, str(exc) or fallback)
    return json_error(500, str(exc) or "Pipeline error.")


def _http_exception_response(exc: web.HTTPException) -> web.Response:
    default_text = f"{exc.status}: {exc.reason}"
    text = exc.text
    msg = text if text and text != default_text else exc.reason
    if exc.status == 413:
        msg = "Request body exceeds limit."
    keep = {k: v for k, v in exc.headers.items() if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)}
    return json_error(exc.status, msg, headers=keep)


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError, checked without importing torch here: if torch is not
    # loaded, no pipeline ran and nothing can have run out of GPU memory.
    torch = sys.modules.get("torch")
    return isinstance(exc, MemoryError) or (torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError))


@web.middleware
async def error_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if request.path.startswith(PASSTHROUGH_PREFIXES):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.msg, exc.headers)
    except RequestValidationError as exc:
        return _validation_response(exc.errors)
    except PipelineError as exc:
        if isinstance(exc, InferenceError):
            log.error("%s %s: %s", request.method, request.path, exc, exc_info=exc.__cause__ or exc)
            if _is_out_of_memory(exc.__cause__ or exc):
                return json_error(500, "GPU out of memory.")
        else:
            log.info("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
        return _pipeline_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type != "text/plain":
            raise  # redirects, and errors whose handler chose its body (JSON, SDP, ...)
        return _http_exception_response(exc)
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        if _is_out_of_memory(exc):
            return json_error(500, "GPU out of memory.")
        return json_error(500, "Internal Server Error.")
