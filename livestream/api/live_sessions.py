"""The live session API (`livestream.live`): list, pipelines, status, params patch, stop.

    GET    /live                    active sessions (a short status each)
    GET    /live/openapi.json       this API's OpenAPI document (`live_openapi`), open as /openapi.json
    GET    /live/pipelines          live pipelines and their params JSON schema
    GET    /live/{stream}/status    full status (also for a recently ended stream)
    POST   /live/{stream}           a direct stream's params and rtmp_output, before or while it publishes
    POST   /live/{stream}/params    JSON patch merged into the current params
    DELETE /live/{stream}           stop; answers the final status
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import hdrs, web

from pipelines.base import params_schema
from pipelines.errors import InvalidRequestError

from .. import __version__
from ..live.control import ControlError
from ..live.manager import SessionManager
from .errors import ApiError
from .live_openapi import build_live_openapi
from ..keys import SETTINGS_KEY
from ..live import LIVE_MANAGER_KEY

__all__ = ["add_live_routes"]

routes = web.RouteTableDef()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, default=str).encode(), status=status, content_type="application/json")


def _manager(request: web.Request) -> SessionManager:
    """The manager, after the bearer check the runner routes make (when a token is set)."""
    token = request.app[SETTINGS_KEY].auth_token
    if token:
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(credentials.encode(), token.encode()):
            raise ApiError(401, "Invalid bearer token.", {hdrs.WWW_AUTHENTICATE: "Bearer"})
    return request.app[LIVE_MANAGER_KEY]


@routes.get("/live/openapi.json")
async def live_openapi(request: web.Request) -> web.Response:
    return _json(build_live_openapi(__version__))


@routes.get("/live")
async def list_sessions(request: web.Request) -> web.Response:
    items = []
    for session in _manager(request).sessions():
        status = session.status(for_api=True)
        items.append(
            {
                k: status[k]
                for k in ("stream_id", "pipeline", "state", "start_time", "width", "height", "frames_in", "frames_out")
            }
            | {"input_fps": status["input_status"]["fps"], "output_fps": status["inference_status"]["fps"]}
            | {"ingest": status["ingest"]["kind"], "outputs": [o["name"] for o in status["outputs"]]}
        )
    return _json({"sessions": items})


@routes.get("/live/pipelines")
async def list_pipelines(request: web.Request) -> web.Response:
    manager = _manager(request)
    return _json(
        {
            "pipelines": [
                {"name": spec.name, "description": spec.description, "params_schema": params_schema(spec.params_model)}
                for spec in manager.pipelines()
            ]
        }
    )


@routes.get("/live/{stream}/status")
async def session_status(request: web.Request) -> web.Response:
    manager = _manager(request)
    stream = request.match_info["stream"]
    session = manager.get(stream)
    if session is not None:
        return _json(session.status(for_api=True))
    ended = manager.ended_status(stream)
    if ended is not None:
        return _json(ended)
    raise ApiError(404, f"No live stream {stream!r}.")


async def _json_object(request: web.Request, message: str) -> dict[str, Any]:
    """The request's body, a JSON object; anything else is a 400 with `message`."""
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, message) from None
    if not isinstance(body, dict):
        raise ApiError(400, message)
    return body


@routes.post("/live/{stream}/params")
async def patch_params(request: web.Request) -> web.Response:
    manager = _manager(request)
    stream = request.match_info["stream"]
    session = manager.get(stream)
    if session is None:
        raise ApiError(404, f"No live stream {stream!r}.")
    patch = await _json_object(request, "The body must be a JSON object of params.")
    try:
        params = session.patch_params(patch)
    except ControlError as exc:
        raise ApiError(400, str(exc)) from None
    return _json({"stream_id": stream, "params": params.model_dump()})


@routes.post("/live/{stream}")
async def configure_stream(request: web.Request) -> web.Response:
    """Store a direct stream's `params` and/or `rtmp_output`; applied now if it is live."""
    manager = _manager(request)
    stream = request.match_info["stream"]
    body = await _json_object(request, 'The body must be a JSON object like {"params": {...}, "rtmp_output": "rtmp://..."}.')
    try:
        result = await manager.configure(stream, body)
    except InvalidRequestError as exc:
        raise ApiError(400, str(exc)) from None
    return _json(result)


@routes.delete("/live/{stream}")
async def stop_session(request: web.Request) -> web.Response:
    stream = request.match_info["stream"]
    final = await _manager(request).stop(stream)
    if final is None:
        raise ApiError(404, f"No live stream {stream!r}.")
    return _json(final)


def add_live_routes(app: web.Application) -> None:
    app.router.add_routes(routes)
