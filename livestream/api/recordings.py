"""Recording a live stream (`livestream.egress.recording`): start, stop, list, download.

    POST   /live/{stream}/record              start recording the running stream (201 + the recording);
                                              {"input": true} (or ?input=1) records the input as sent too
    DELETE /live/{stream}/record              stop; answers the finished recording(s)
    GET    /live/{stream}/recordings          [{"path", "url", "bytes", "started", "ended", ...}]
    GET    /live/{stream}/recordings/{name}   the MP4 file (also while it is being written)

The same bearer check as the other live routes applies (when the engine has a token).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..egress.recording import Recording, RecordingError
from .errors import ApiError
from .live_sessions import _manager, _json_object

__all__ = ["add_recording_routes"]

routes = web.RouteTableDef()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


def _entry(request: web.Request, recording: Recording) -> dict[str, Any]:
    path = request.app.router["recording_file"].url_for(stream=recording.stream, name=recording.name)
    return {"url": str(request.url.origin().join(path))} | recording.info()


def _answer(request: web.Request, recordings: list[Recording]) -> dict[str, Any]:
    """The output's recording, with the input's under `input` when there is one."""
    output = next(r for r in recordings if r.source == "output")
    entry = _entry(request, output)
    for recording in recordings:
        if recording.source == "input":
            entry["input"] = _entry(request, recording)
    return entry


async def _wants_input(request: web.Request) -> bool:
    if request.query.get("input", "").lower() in ("1", "true", "yes"):
        return True
    if not request.can_read_body:
        return False
    message = 'The body must be empty or a JSON object like {"input": true}.'
    body = await _json_object(request, message)
    if set(body) - {"input"} or not isinstance(body.get("input", False), bool):
        raise ApiError(400, message)
    return bool(body.get("input", False))


@routes.post("/live/{stream}/record")
async def start_recording(request: web.Request) -> web.Response:
    manager = _manager(request)
    stream = request.match_info["stream"]
    session = manager.get(stream)
    if session is None:
        raise ApiError(404, f"No live stream {stream!r}: recording starts on a running stream.")
    try:
        recordings = manager.recordings.start(session, input=await _wants_input(request))
    except RecordingError as exc:
        raise ApiError(409, str(exc)) from None
    return _json(_answer(request, recordings), status=201)


@routes.delete("/live/{stream}/record")
async def stop_recording(request: web.Request) -> web.Response:
    manager = _manager(request)
    stream = request.match_info["stream"]
    session = manager.get(stream)
    recordings = await manager.recordings.stop(session) if session is not None else []
    if not recordings:
        raise ApiError(404, f"Stream {stream!r} is not being recorded.")
    return _json(_answer(request, recordings))


@routes.get("/live/{stream}/recordings")
async def list_recordings(request: web.Request) -> web.Response:
    manager = _manager(request)
    stream = request.match_info["stream"]
    return _json([_entry(request, r) for r in manager.recordings.list(stream)])


@routes.get("/live/{stream}/recordings/{name}", name="recording_file")
async def recording_file(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    stream, name = request.match_info["stream"], request.match_info["name"]
    recording = manager.recordings.find(stream, name)
    if recording is None or not recording.path.is_file():
        raise ApiError(404, f"No recording {name!r} of stream {stream!r}.")
    return web.FileResponse(recording.path, headers={"Content-Type": "video/mp4"})


def add_recording_routes(app: web.Application) -> None:
    app.router.add_routes(routes)
