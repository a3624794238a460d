"""The app's routes, reached through the orchestrator's proxy (mounted under `runner_url`'s path).

    POST {prefix}/stream/start    {"params": {...}}  → the session's public trickle URLs
    POST {prefix}/stream/params   {...}              → params merged into the running session
    GET  {prefix}/stream/status                      → the session's status
    POST {prefix}/stream/stop                        → stop; the orchestrator releases the session

Every request carries the orchestrator's `Livepeer-Session-Id`, `-Token` and `-Control` headers
(it overwrites any a client sends); a request without them did not come through an
orchestrator and is refused. See docs/orchestrator.md for the contract.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pipelines.errors import InvalidRequestError

from ..errors import SessionLimitError
from ..live.control import ControlError
from .callbacks import CallbackError
from .config import HEADER_SESSION_CONTROL, HEADER_SESSION_ID, HEADER_SESSION_TOKEN
from .sessions import RunnerSession, RunnerSessions

__all__ = ["add_runner_routes"]

log = logging.getLogger(__name__)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, default=str).encode(), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": {"message": message}}, status)


def _session_headers(request: web.Request) -> tuple[str, str, str] | web.Response:
    sid = request.headers.get(HEADER_SESSION_ID, "")
    token = request.headers.get(HEADER_SESSION_TOKEN, "")
    control = request.headers.get(HEADER_SESSION_CONTROL, "")
    if not sid or not token or not control:
        return _error(
            400,
            f"Missing {HEADER_SESSION_ID}/{HEADER_SESSION_TOKEN}/{HEADER_SESSION_CONTROL}: "
            "reserve a session at the orchestrator and call the app through it.",
        )
    return sid, token, control


def _forbidden_for(entry: RunnerSession | None, token: str, control: str) -> web.Response | None:
    """403 when a running session's request carries other session headers than the ones the
    orchestrator verified at start (its token is an HMAC of a seed only the orchestrator holds,
    so it cannot be checked here from scratch; only compared)."""
    if entry is None or entry.authorized(token, control):
        return None
    return _error(403, f"Invalid {HEADER_SESSION_TOKEN} for this session.")


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "The body must be a JSON object.")
    if not isinstance(body, dict):
        return _error(400, "The body must be a JSON object.")
    return body


def add_runner_routes(
    app: web.Application, prefix: str, sessions_of: Callable[[web.Request], RunnerSessions]
) -> None:
    """Add the app's routes under `prefix` ("" or "/path"); `sessions_of(request)` finds the sessions."""

    async def start(request: web.Request) -> web.Response:
        sessions = sessions_of(request)
        headers = _session_headers(request)
        if isinstance(headers, web.Response):
            return headers
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        params = body.get("params", {})
        if not isinstance(params, dict):
            return _error(400, "`params` must be a JSON object.")
        sid, token, control = headers
        if (forbidden := _forbidden_for(sessions.get(sid), token, control)) is not None:
            return forbidden
        try:
            entry, created = await sessions.start(sid, control, token, params)
        except SessionLimitError as exc:
            return _error(503, str(exc))
        except InvalidRequestError as exc:
            return _error(400, str(exc))
        except CallbackError as exc:
            log.warning("session %s: the orchestrator refused its channels: %s", sid, exc)
            status = 502 if exc.status in (0, 200) or exc.status >= 500 else 403
            return _error(status, f"The orchestrator refused the session's channels: {exc}")
        return _json(entry.describe() | {"created": created})

    def running(request: web.Request) -> RunnerSession | web.Response:
        """The caller's running session, or the 400/403/404 answer."""
        headers = _session_headers(request)
        if isinstance(headers, web.Response):
            return headers
        entry = sessions_of(request).get(headers[0])
        if entry is None:
            return _error(404, "This session has no stream; POST stream/start first.")
        if (forbidden := _forbidden_for(entry, headers[1], headers[2])) is not None:
            return forbidden
        return entry

    async def params(request: web.Request) -> web.Response:
        entry = running(request)
        if isinstance(entry, web.Response):
            return entry
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        patch = body.get("params", body)
        if not isinstance(patch, dict):
            return _error(400, "`params` must be a JSON object.")
        try:
            result = entry.session.patch_params(patch)
        except ControlError as exc:
            return _error(400, str(exc))
        return _json({"session_id": entry.session_id, "params": result.model_dump()})

    async def status(request: web.Request) -> web.Response:
        entry = running(request)
        if isinstance(entry, web.Response):
            return entry
        return _json(entry.describe() | {"status": entry.session.status(for_api=True)})

    async def stop(request: web.Request) -> web.Response:
        sessions = sessions_of(request)
        headers = _session_headers(request)
        if isinstance(headers, web.Response):
            return headers
        if (forbidden := _forbidden_for(sessions.get(headers[0]), headers[1], headers[2])) is not None:
            return forbidden
        final = await sessions.stop(headers[0], "stopped by the client", notify=True)
        if final is None:
            return _error(404, "This session has no stream.")
        return _json(final)

    app.router.add_post(f"{prefix}/stream/start", start)
    app.router.add_post(f"{prefix}/stream/params", params)
    app.router.add_get(f"{prefix}/stream/status", status)
    app.router.add_post(f"{prefix}/stream/stop", stop)
