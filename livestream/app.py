"""The engine's aiohttp application: runner API, trickle server, live sessions."""

from __future__ import annotations

from aiohttp import web

from .api import setup_api
from .keys import SETTINGS_KEY
from .settings import Settings

__all__ = ["TRICKLE_BASE_PATH", "build_app"]

#: Where the engine mounts its trickle server, as a go-livepeer orchestrator does.
TRICKLE_BASE_PATH = "/ai/trickle/"


def build_app(settings: Settings) -> web.Application:
    """Build the whole engine application from one settings object."""
    app = web.Application(client_max_size=1024**2 * 64)
    app[SETTINGS_KEY] = settings
    setup_api(app, settings)
    return app
