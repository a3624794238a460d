"""Typed aiohttp application keys shared by the engine's route areas, and the small protocols
of what is stored under them.

This module sits below the route areas (`api`, `live`, `webrtc`): they import it, and a protocol
here (`HealthSource`) is how the API reads the live manager's state without importing `live`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from aiohttp import web

from .settings import Settings

if TYPE_CHECKING:
    from pipelines.registry import PipelineRegistry

__all__ = ["LIVE_HEALTH_KEY", "REGISTRY_KEY", "SETTINGS_KEY", "HealthSource", "HealthStatus"]

#: ai-runner's `/health` statuses (the `HealthCheck` schema's `status`). `LOADING` follows
#: ai-runner's runner/openapi.yaml; the reference copy of the spec predates it.
HealthStatus = Literal["LOADING", "OK", "ERROR", "IDLE"]


class HealthSource(Protocol):
    """What reports `/health` in live runner mode: the live session manager."""

    @property
    def health(self) -> HealthStatus: ...


SETTINGS_KEY = web.AppKey("settings", Settings)
#: The batch pipeline registry; created and closed by the API's cleanup context.
REGISTRY_KEY: web.AppKey[PipelineRegistry] = web.AppKey("registry")
#: Set by the live session manager: `/health` reports its state (IDLE/OK/...) in live runner mode.
LIVE_HEALTH_KEY: web.AppKey[HealthSource] = web.AppKey("live_health")
