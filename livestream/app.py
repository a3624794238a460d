"""The engine's aiohttp application: runner API, trickle server, live sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from pipelines.threads import daemon_default_executor
from trickle import TrickleServer, TrickleServerConfig

from .api import setup_api
from .api.live_sessions import add_live_routes
from .api.rate_limit import RateLimiter, rate_limit_middleware
from .api.recordings import add_recording_routes
from .keys import SETTINGS_KEY
from .live import setup_live
from .live.client_limits import CLIENT_SESSIONS_KEY, ClientSessions
from .liverunner import setup_live_runner
from .protocols import OUTPUT_SINKS, setup_protocols
from .settings import Settings
from .webrtc import setup_webrtc

__all__ = ["TRICKLE_BASE_PATH", "build_app"]

#: Where the engine mounts its trickle server, as a go-livepeer orchestrator does.
TRICKLE_BASE_PATH = "/ai/trickle/"


def build_app(settings: Settings) -> web.Application:
    """Build the whole engine application from one settings object."""
    limits = settings.stream_limits
    middlewares: list[Middleware] = [rate_limit_middleware(RateLimiter(limits.api_rate))] if limits.api_rate else []
    app = web.Application(client_max_size=1024**2 * 64, middlewares=middlewares)
    app[SETTINGS_KEY] = settings
    app[CLIENT_SESSIONS_KEY] = ClientSessions(limits.sessions_per_client)
    app.cleanup_ctx.append(_default_executor)  # first in, last out: the others' to_thread calls
    # Engine code creates channels in-process through `app[trickle.TRICKLE_SERVER_KEY]`.
    trickle_config = TrickleServerConfig(
        autocreate=settings.trickle_autocreate,
        max_streams=limits.trickle_channels,
        max_segment_bytes=limits.trickle_segment_bytes,
    )
    TrickleServer(trickle_config).setup(app, TRICKLE_BASE_PATH)
    setup_api(app, settings)
    setup_live(app, settings, OUTPUT_SINKS)
    add_live_routes(app)
    add_recording_routes(app)
    setup_live_runner(app, settings)
    setup_protocols(app, settings)
    setup_webrtc(app, settings)
    return app


async def _default_executor(app: web.Application) -> AsyncIterator[None]:
    """`asyncio.to_thread` runs on daemon threads: a stuck call never holds the process's exit."""
    async with daemon_default_executor():
        yield
