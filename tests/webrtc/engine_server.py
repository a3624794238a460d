"""The engine app on a loopback `TestServer`, for the WebRTC tests that reach it over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestServer

from livestream.app import build_app
from livestream.live import LIVE_CONFIG_KEY, SessionConfig
from livestream.settings import Settings


@contextlib.asynccontextmanager
async def serve_engine(settings: Settings, config: SessionConfig) -> AsyncIterator[tuple[str, Any]]:
    """Serve `build_app(settings)` with live sessions configured by `config`; yields (base URL, app)."""
    app = build_app(settings)
    app[LIVE_CONFIG_KEY] = config
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")), app
    finally:
        await server.close()
