"""`GET /health` status, with ai-runner's meaning (see shared/reference/ai-runner-contract.md §3).

- Batch: LOADING while the pinned model preloads, ERROR if it failed to load, OK otherwise
  (ai-runner's batch pipelines always answer OK once up).
- Live runner mode (`--pipeline live-video-to-video`): whatever the live session manager says
  (LOADING, IDLE with no stream, OK streaming, ERROR); it registers itself under
  `livestream.keys.LIVE_HEALTH_KEY`.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..keys import LIVE_HEALTH_KEY, REGISTRY_KEY, HealthStatus
from ..settings import Settings

__all__ = ["LIVE_TASK", "health_status", "health_status_or_error"]

log = logging.getLogger(__name__)

LIVE_TASK = "live-video-to-video"


def health_status(app: web.Application, settings: Settings) -> HealthStatus:
    live = app.get(LIVE_HEALTH_KEY)
    if live is not None and settings.pipeline == LIVE_TASK:
        return live.health
    registry = app.get(REGISTRY_KEY)
    if registry is None:
        return "LOADING"
    return registry.health


def health_status_or_error(app: web.Application, settings: Settings) -> HealthStatus:
    """`health_status`, or ERROR when computing it raised; the exception is logged, never
    swallowed silently (for callers that must always answer, e.g. a metrics scrape)."""
    try:
        return health_status(app, settings)
    except Exception:
        log.exception("health status failed; reporting ERROR")
        return "ERROR"
