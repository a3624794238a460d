"""The gateway's aiohttp application: the gateway API over the runners, plus `/openapi.json`,
`/health`, `/backends`, `/metrics` and the stored media at `/stream/{id}/{name}`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from .. import __version__
from ..api.bodies import BodyLimits
from ..api.errors import ApiError, error_middleware, json_error
from ..api.rate_limit import RateLimiter, rate_limit_middleware
from ..keys import SETTINGS_KEY
from ..webrtc import WEBRTC_DIRECTORY_KEY, setup_webrtc
from .auth import auth_middleware
from .backends import Discovery
from .config import GatewayConfig
from .jobs import AsyncJobs
from .live import LiveStreams
from .live_media import LIVE_MEDIA_KEY, GatewayDirectory, LiveMedia, settings_for
from .live_routes import LIVE_KEY, LIVE_PIPELINES_KEY, LivePipelines, add_live_routes
from .metrics import GatewayMetrics, LiveCollector
from .payments import PaymentsCollector
from .proxy import GatewayError, Proxy
from .requests import read_forwarded
from .selection import Selector
from .spec import GATEWAY_ROUTES, GatewayRoute, build_gateway_openapi
from .storage import open_store
from trickle import TrickleServer, TrickleServerConfig

__all__ = ["GATEWAY_KEY", "Gateway", "build_gateway_app"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """What the handlers share; created by the app's cleanup context."""

    def __init__(self, config: GatewayConfig, session: aiohttp.ClientSession, limits: BodyLimits) -> None:
        self.config = config
        self.limits = limits
        self.discovery = Discovery(config, session)
        self.selector = Selector(config)
        self.metrics = GatewayMetrics(self.discovery.backends)
        self.store = open_store(config.object_store, config.storage_dir, config.storage_ttl)
        self.jobs = AsyncJobs(self.store)
        self.proxy = Proxy(config, self.discovery, self.selector, self.metrics, session, self.store)
        self.openapi = json.dumps(build_gateway_openapi(__version__)).encode()

    def base_url(self, request: web.Request) -> str:
        return (self.config.public_url or f"{request.scheme}://{request.host}").rstrip("/")


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY_KEY]


def _route_handler(route: GatewayRoute) -> _Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        gw = _gateway(request)
        status = 500
        try:
            fwd = await read_forwarded(request, route, gw.limits)
            base_url = gw.base_url(request)
            if route.kind == "video" and "respond-async" in request.headers.get("Prefer", "").lower():
                request_id = await gw.jobs.start(_as_json(gw.proxy.forward(fwd, base_url)))
                status = 202
                return web.json_response({"request_id": request_id}, status=202)
            result = await gw.proxy.forward(fwd, base_url, request if fwd.stream else None)
            if isinstance(result, web.StreamResponse):
                status = result.status
                return result
            status = 200
            return web.json_response(result)
        except GatewayError as exc:
            status = exc.status
            return web.Response(status=exc.status, body=exc.body, content_type=exc.content_type)
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            gw.metrics.client_requests.labels(route.path, str(status)).inc()

    return handle


async def _as_json(work: Awaitable[dict[str, Any] | web.StreamResponse]) -> dict[str, Any]:
    result = await work
    if not isinstance(result, dict):
        raise GatewayError(500, "unexpected streamed answer")
    return result


async def _video_result(request: web.Request) -> web.StreamResponse:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Request body is not valid JSON.") from None
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str) or not request_id:
        raise ApiError(400, "request_id is required.")
    state = await _gateway(request).jobs.poll(request_id)
    if state is None:
        raise ApiError(400, "unknown request_id")
    return web.json_response(state, status=202 if state["status"] == "processing" else 200)


async def _stream(request: web.Request) -> web.StreamResponse:
    key = f"{request.match_info['id']}/{request.match_info['name']}"
    stored = await _gateway(request).store.get(key)
    if stored is None:
        return json_error(404, "Not found.")
    if stored.path is not None:
        return web.FileResponse(stored.path, headers={"Content-Type": stored.content_type})
    return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_gateway(request).openapi, content_type="application/json")


async def _health(request: web.Request) -> web.StreamResponse:
    up = sum(1 for _ in _gateway(request).discovery.up())
    return web.json_response({"status": "OK" if up else "IDLE", "backends_up": up})


async def _backends(request: web.Request) -> web.StreamResponse:
    gw = _gateway(request)
    payments = gw.discovery.payments
    backends = [{**b.status(), "payments": payments.status(b.url) if payments else None} for b in gw.discovery.backends]
    return web.json_response({"rounds": gw.discovery.rounds, "backends": backends})


async def _metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_gateway(request).metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


def build_gateway_app(config: GatewayConfig, limits: BodyLimits | None = None) -> web.Application:
    middlewares: list[Any] = [error_middleware]
    if config.api_keys:
        middlewares.append(auth_middleware(config.api_keys))
    if config.api_rate:  # after auth: only valid keys get a bucket
        middlewares.append(rate_limit_middleware(RateLimiter(config.api_rate)))
    body_limits = limits or BodyLimits()
    app = web.Application(middlewares=middlewares, client_max_size=body_limits.multipart_bytes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # No total timeout: a long inference is never cut (go-livepeer's batch client has none).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            gw = Gateway(config, session, body_limits)
            app[GATEWAY_KEY] = gw
            live = LiveStreams(config, trickle, gw.discovery, gw.selector, session,
                               on_swap=lambda s: gw.metrics.live_swaps.labels(s.name).inc(),
                               on_suspend=lambda b: gw.metrics.suspensions.labels(b.url).inc())  # fmt: skip
            app[LIVE_KEY] = live
            app[LIVE_PIPELINES_KEY] = LivePipelines(live)
            media = app[LIVE_MEDIA_KEY] = directory.media = LiveMedia(live, config, settings)
            gw.metrics.registry.register(LiveCollector(live.streams))
            if gw.discovery.payments is not None:
                gw.metrics.registry.register(PaymentsCollector(gw.discovery.payments))
            async with gw.store.running(), gw.discovery.running(), media.running():
                await gw.discovery.wait_first_round(config.probe_timeout + 1)
                yield
                await live.close()
                await gw.jobs.close()

    # The live streams' trickle channels, hosted as an orchestrator hosts them (gateway/live.py).
    trickle = TrickleServer(TrickleServerConfig())
    trickle.setup(app, "/ai/trickle/")
    app.cleanup_ctx.append(lifecycle)
    add_live_routes(app)
    # RTMP ingest, WHEP playback and the player page: the engine's parts (gateway/live_media.py).
    settings = settings_for(config)
    app[SETTINGS_KEY] = settings
    directory = GatewayDirectory()
    app[WEBRTC_DIRECTORY_KEY] = directory
    setup_webrtc(app, settings)
    for route in GATEWAY_ROUTES:
        handler = _route_handler(route)
        app.router.add_post(route.path, handler)
        app.router.add_post(route.path + "/", handler)
    app.router.add_post("/image-to-video/result", _video_result)
    app.router.add_get("/stream/{id}/{name}", _stream)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/health", _health)
    app.router.add_get("/backends", _backends)
    app.router.add_get("/metrics", _metrics)
    return app
