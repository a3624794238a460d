"""Live sessions: trickle in, decode, pipeline, encode, trickle out (see `session.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from pipelines.live import LivePipelineRegistry

from ..keys import LIVE_HEALTH_KEY
from ..settings import Settings
from .manager import SessionManager
from .routes import LIVE_MANAGER_KEY, add_live_routes
from .session import Session, SessionConfig, StartRequest

__all__ = [
    "LIVE_CONFIG_KEY",
    "LIVE_MANAGER_KEY",
    "LIVE_REGISTRY_KEY",
    "RTMP_SERVER_KEY",
    "Session",
    "SessionConfig",
    "SessionManager",
    "StartRequest",
    "setup_live",
]

#: Optional overrides, set before the app starts (tests shorten timers, add pipelines).
LIVE_CONFIG_KEY = web.AppKey("live_config", SessionConfig)
LIVE_REGISTRY_KEY = web.AppKey("live_registry", LivePipelineRegistry)
#: The embedded RTMP server, when `settings.rtmp_port` is set (its `port` is the bound one).
RTMP_SERVER_KEY: web.AppKey[Any] = web.AppKey("rtmp_server")


def setup_live(app: web.Application, settings: Settings) -> None:
    """Add the session API and the session manager's lifetime (cleanup context) to `app`."""
    add_live_routes(app)

    async def live_ctx(app: web.Application) -> AsyncIterator[None]:
        manager = SessionManager(settings, registry=app.get(LIVE_REGISTRY_KEY), config=app.get(LIVE_CONFIG_KEY))
        async with manager:
            app[LIVE_MANAGER_KEY] = manager
            app[LIVE_HEALTH_KEY] = manager
            if settings.rtmp_port is None:
                yield
                return
            from ..rtmp import RtmpServer

            async with RtmpServer(manager, settings) as rtmp:
                app[RTMP_SERVER_KEY] = rtmp
                manager.direct_pipeline  # noqa: B018  (resolve `auto` and log it at start-up)
                yield

    app.cleanup_ctx.append(live_ctx)
