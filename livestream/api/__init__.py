"""The runner HTTP API (routes, schemas, errors, auth, OpenAPI)."""

from __future__ import annotations

from aiohttp import web

from ..settings import Settings

__all__ = ["setup_api"]


def setup_api(app: web.Application, settings: Settings) -> None:
    """Add the runner API's routes and middlewares to `app`."""
