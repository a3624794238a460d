"""Typed aiohttp application keys shared by the engine's route areas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .settings import Settings

if TYPE_CHECKING:
    from pipelines.registry import PipelineRegistry

    from .api.health import HealthSource
    from .live.manager import SessionManager

__all__ = ["LIVE_HEALTH_KEY", "LIVE_MANAGER_KEY", "REGISTRY_KEY", "SETTINGS_KEY"]

SETTINGS_KEY = web.AppKey("settings", Settings)
#: The batch pipeline registry; created and closed by the API's cleanup context.
REGISTRY_KEY: web.AppKey[PipelineRegistry] = web.AppKey("registry")
#: Set by the live session manager: `/health` reports its state (IDLE/OK/...) in live runner mode.
LIVE_HEALTH_KEY: web.AppKey[HealthSource] = web.AppKey("live_health")
#: The live session manager; created and closed by the live cleanup context (`livestream.live`).
LIVE_MANAGER_KEY: web.AppKey[SessionManager] = web.AppKey("live_manager")
