"""Live sessions: trickle in, decode, pipeline, encode, trickle out (see `session.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from pipelines.live import LivePipelineRegistry

from ..keys import LIVE_HEALTH_KEY
from ..settings import Settings
from .manager import SessionManager, SinkFactory
from .session import Session, SessionConfig, StartRequest

__all__ = [
    "LIVE_CONFIG_KEY",
    "LIVE_MANAGER_KEY",
    "LIVE_REGISTRY_KEY",
    "Session",
    "SessionConfig",
    "SessionManager",
    "StartRequest",
    "setup_live",
]

#: Optional overrides, set before the app starts (tests shorten timers, add pipelines).
LIVE_CONFIG_KEY = web.AppKey("live_config", SessionConfig)
LIVE_REGISTRY_KEY = web.AppKey("live_registry", LivePipelineRegistry)
#: The live session manager; created and closed by `setup_live`'s cleanup context.
LIVE_MANAGER_KEY = web.AppKey("live_manager", SessionManager)


def setup_live(app: web.Application, settings: Settings, output_sinks: Mapping[str, SinkFactory]) -> None:
    """Add the session manager's lifetime (cleanup context) to `app` (its HTTP API is
    `livestream.api.live_sessions`);
    `output_sinks` builds a direct stream's push output from its URL's scheme."""

    async def live_ctx(app: web.Application) -> AsyncIterator[None]:
        manager = SessionManager(
            settings, registry=app.get(LIVE_REGISTRY_KEY), config=app.get(LIVE_CONFIG_KEY), output_sinks=output_sinks
        )
        async with manager:
            app[LIVE_MANAGER_KEY] = manager
            app[LIVE_HEALTH_KEY] = manager
            yield

    app.cleanup_ctx.append(live_ctx)
