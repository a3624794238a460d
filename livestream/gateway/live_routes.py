"""go-livepeer's live gateway routes over `LiveStreams`, and its live auth webhook.

    POST /live/video-to-video/{stream}/start     the ingest hook (multipart or urlencoded form:
                                                 source_id, source_type, query, rtmp_url)
    POST /live/video-to-video/{stream}/update    raw body → the control channel (params)
    GET  /live/video-to-video/{stream}/status    last runner status + gateway_status (by stream id)
    GET  /live/{stream}/status                   the same, under the engine's route
    GET  /live/pipelines                         the runners' live pipelines and params schemas
    POST /live/{stream}/params                   the engine's params patch (merged, then sent whole)
    POST /live/video-to-video/{stream}/whip      go-livepeer's WHIP path (+ Livepeer-Playback-URL)
    POST /live/video-to-video/{stream}-out/whep  go-livepeer's WHEP path (also `{stream}-{id}-out`)

The stream's input is MPEG-TS published to the gateway's trickle channel `/ai/trickle/{stream}`,
its output is read from `/ai/trickle/{stream}-out` (the start answer gives both URLs), or
played over WHEP at `/live/{stream}/whep`, or pushed to the start query's `rtmpOutput` (or the
webhook's `rtmp_output_url`): live_media.py. The start hook's query and the WHIP POST's query are
read the same way, with the webhook over them (`live_auth.start_settings`); the query's
`rtmpOutput` comes from the publisher, so it goes through the URL guard (refused here, and pinned
at each connect); the webhook's is the operator's and is trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, quote

import aiohttp
from aiohttp import hdrs, web

from ..webrtc import routes as webrtc_routes
from .backends import Backend, auth_headers
from .config import GatewayConfig
from .live import LiveError, LiveStreams
from .live_auth import StartRefused, start_settings
from .live_media import LIVE_MEDIA_KEY

__all__ = ["LIVE_KEY", "LIVE_PIPELINES_KEY", "LivePipelines", "add_live_routes"]

log = logging.getLogger(__name__)

LIVE_KEY = web.AppKey("gateway_live", LiveStreams)
_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
         "Access-Control-Allow-Headers": "*"}  # fmt: skip
_SOURCE_TYPES = {"webrtcsession": "whip", "rtmpconn": "rtmp"}


def _error(status: int, message: str) -> web.Response:
    """go-livepeer's error shape, `{"error": {"message"}}`."""
    return web.json_response({"error": {"message": message}}, status=status, headers=_CORS)


def _live(request: web.Request) -> LiveStreams:
    return request.app[LIVE_KEY]


def _base(request: web.Request, config: GatewayConfig) -> str:
    return (config.public_url or f"{request.scheme}://{request.host}").rstrip("/")


async def _start(request: web.Request) -> web.StreamResponse:
    live = _live(request)
    config = live.config
    stream = request.match_info["stream"]
    if stream.endswith("-out"):  # go-livepeer ignores its own output streams
        return web.json_response({}, headers=_CORS)
    if request.content_type == "application/json":
        try:
            form: dict[str, Any] = dict(await request.json())
        except (ValueError, TypeError):
            return _error(400, "invalid JSON body")
    else:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    source_id, source_type = str(form.get("source_id") or ""), str(form.get("source_type") or "").lower()
    if not source_id or not source_type:
        return _error(400, "source_id and source_type are required")
    source_type = _SOURCE_TYPES.get(source_type, source_type)
    raw_query = str(form.get("query") or "")
    base = _base(request, config)
    try:
        chosen = await start_settings(live.http, config, stream=stream, source_type=source_type, raw_query=raw_query,
                                      base=base, stream_key=parse_qs(raw_query).get("streamKey", [stream])[0])  # fmt: skip
    except StartRefused as exc:
        return _error(exc.status, exc.message)
    trickle_base = config.live_trickle_url or f"{base}/ai/trickle/"
    if not trickle_base.endswith("/"):
        trickle_base += "/"
    try:
        started = await request.app[LIVE_MEDIA_KEY].start_stream(stream, chosen, trickle_base)
    except LiveError as exc:
        return _error(exc.status, exc.message)
    body: dict[str, Any] = {
        "stream": stream, "stream_id": started.stream_id,
        "publish_url": f"{base}/ai/trickle/{quote(stream)}",
        "subscribe_url": f"{base}/ai/trickle/{quote(stream)}-out",
        "update_url": f"{base}/live/video-to-video/{quote(stream)}/update",
        "status_url": f"{base}/live/video-to-video/{quote(started.stream_id)}/status",
        "runner": started.figures()["runner"], "rtmp_output_url": chosen.rtmp_output or None,
    }  # fmt: skip
    return web.json_response(body, headers=_CORS)


async def _update(request: web.Request) -> web.StreamResponse:
    stream = _live(request).get(request.match_info["stream"])
    if stream is None:
        return web.Response(status=404, text="Stream not found\n", headers=_CORS)
    stream.update(await request.read())
    return web.Response(status=200, headers=_CORS)


async def _params(request: web.Request) -> web.StreamResponse:
    """The engine's `POST /live/{stream}/params` (the player page's): a JSON patch merged into the
    stream's params, sent whole on the control channel (a control message is a full set)."""
    stream = _live(request).get(request.match_info["stream"])
    if stream is None:
        return _error(404, "Stream not found")
    try:
        patch = await request.json()
    except ValueError:
        patch = None
    if not isinstance(patch, dict):
        return _error(400, "The body must be a JSON object of params.")
    merged = {**stream.params, **patch}
    stream.update(json.dumps(merged).encode())
    return web.json_response({"stream_id": stream.stream_id, "params": merged}, headers=_CORS)


async def _status(request: web.Request) -> web.StreamResponse:
    live = _live(request)
    key = request.match_info["stream"]
    stream = live.find(key)
    if stream is not None:
        status = stream.status()
        relay = request.app[LIVE_MEDIA_KEY].relays.get(stream.name)
        if relay is not None:  # RTMP/WHIP in, WHEP/RTMP out: packets, viewers, outputs, ingest
            status["gateway_status"]["media"] = relay.status()
        return web.json_response(status, headers=_CORS)
    ended = live.ended.get(key)
    if ended is not None:
        return web.json_response(ended, headers=_CORS)
    return _error(404, "Stream not found")


async def _options(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, headers=_CORS)


async def _whip(request: web.Request) -> web.StreamResponse:
    """go-livepeer's `POST /live/video-to-video/{stream}/whip`: the engine's WHIP resource, with
    the start hook's query keys (`pipeline`, `params`, `streamId`, `rtmpOutput`, `orchestrator`:
    `LiveMedia.begin` reads them, the webhook answers over them, type `livepeer-whip` as
    go-livepeer sends), plus `Livepeer-Playback-URL` (the stream's WHEP URL). PATCH and DELETE
    follow its relative Location."""
    stream = request.match_info["stream"]
    media = request.app[LIVE_MEDIA_KEY]
    if stream in media.whip_queries:
        return _error(409, f"Another WHIP offer for {stream!r} is being answered.")
    base = _base(request, _live(request).config)
    media.whip_queries[stream] = (request.query_string, base)
    try:
        response = await webrtc_routes.whip_post(request)
    finally:
        del media.whip_queries[stream]
    response.headers["Livepeer-Playback-URL"] = f"{base}/live/{quote(stream)}/whep"
    expose = response.headers.get(hdrs.ACCESS_CONTROL_EXPOSE_HEADERS, "")
    response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(filter(None, [expose, "Livepeer-Playback-URL"]))
    return response


def _played_stream(live: LiveStreams, path: str) -> str:
    """The stream go-livepeer's WHEP path names: `{stream}-out`, or `{stream}-{requestID}-out`
    (go-livepeer's own form); a path naming no live stream is returned as it is (a 404 follows)."""
    if not path.endswith("-out"):
        return path
    base = path.removesuffix("-out")
    if live.get(base) is not None:
        return base
    named = [name for name in live.streams if base.startswith(name + "-")]
    return max(named, key=len) if named else base


async def _whep(request: web.Request) -> web.StreamResponse:
    """go-livepeer's `POST /live/video-to-video/{stream}-out/whep`: the engine's WHEP route for the
    stream (its relative Location keeps PATCH and DELETE under this path)."""
    request.match_info["stream"] = _played_stream(_live(request), request.match_info["stream"])
    return await webrtc_routes.whep_post(request)


async def _resource_patch(request: web.Request) -> web.StreamResponse:
    if request.match_info["kind"] == "whep":
        request.match_info["stream"] = _played_stream(_live(request), request.match_info["stream"])
    return await webrtc_routes.resource_patch(request)


async def _resource_delete(request: web.Request) -> web.StreamResponse:
    if request.match_info["kind"] == "whep":
        request.match_info["stream"] = _played_stream(_live(request), request.match_info["stream"])
    return await webrtc_routes.resource_delete(request)


class LivePipelines:
    """`GET /live/pipelines` at the gateway (the player page's param controls read it): the
    union of the runners' own `/live/pipelines` lists, each runner's kept `ttl` seconds. A
    pipeline several runners list is given as the runner serving a live stream of it lists it
    (else the first runner's), so a viewer gets the schema of the pipeline the stream runs on."""

    def __init__(self, live: LiveStreams, ttl: float = 30.0) -> None:
        self.live = live
        self.ttl = ttl
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def listing(self) -> list[dict[str, Any]]:
        live = self.live
        runners = [b for b in live.discovery.up() if b.info is None]  # orchestrators list none
        serving = {s.attempt.backend.url for s in live.streams.values() if s.attempt is not None}
        runners.sort(key=lambda b: b.url not in serving)
        lists = await asyncio.gather(*(self._runner_list(b) for b in runners))
        merged: dict[str, dict[str, Any]] = {}
        for items in lists:
            for item in items:
                name = item.get("name")
                if isinstance(name, str) and name not in merged:
                    merged[name] = item
        return list(merged.values())

    async def _runner_list(self, backend: Backend) -> list[dict[str, Any]]:
        now = time.monotonic()
        cached = self._cache.get(backend.url)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        items: list[dict[str, Any]] = []
        try:
            timeout = aiohttp.ClientTimeout(total=self.live.config.probe_timeout)
            async with self.live.http.get(backend.url + "/live/pipelines", headers=auth_headers(backend.config),
                                          timeout=timeout) as resp:  # fmt: skip
                if resp.status == 200:
                    body = await resp.json()
                    found = body.get("pipelines") if isinstance(body, dict) else None
                    items = [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []
                else:
                    log.debug("runner %s: GET /live/pipelines answered %d", backend.url, resp.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ai-runner has no such route
            log.debug("runner %s: GET /live/pipelines failed: %r", backend.url, exc)
        self._cache[backend.url] = (now, items)
        return items


#: The app's `LivePipelines` (set with `LIVE_KEY` by the gateway app's cleanup context).
LIVE_PIPELINES_KEY = web.AppKey("gateway_live_pipelines", LivePipelines)


async def _pipelines(request: web.Request) -> web.StreamResponse:
    return web.json_response({"pipelines": await request.app[LIVE_PIPELINES_KEY].listing()}, headers=_CORS)


def add_live_routes(app: web.Application) -> None:
    prefix = "/live/video-to-video/{stream}"
    app.router.add_get("/live/pipelines", _pipelines)  # before the player page's /live/{stream}
    app.router.add_post(prefix + "/start", _start)
    app.router.add_post("/live/video-to-video/{prefix}/{stream}/start", _start)
    app.router.add_post(prefix + "/update", _update)
    app.router.add_route("OPTIONS", prefix + "/update", _options)
    app.router.add_get(prefix + "/status", _status)
    app.router.add_get("/live/{stream}/status", _status)
    app.router.add_post("/live/{stream}/params", _params)
    app.router.add_post(prefix + "/whip", _whip)
    app.router.add_route("OPTIONS", prefix + "/whip", _options)
    app.router.add_post(prefix + "/whep", _whep)
    app.router.add_route("OPTIONS", prefix + "/whep", _options)
    app.router.add_patch(prefix + "/{kind}/{id}", _resource_patch)
    app.router.add_delete(prefix + "/{kind}/{id}", _resource_delete)
