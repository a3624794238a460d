"""Fixtures for the trickle tests: a real trickle server on loopback and an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from trickle_helpers import FakeClock, MakeServer, Served

from trickle import TrickleServer, TrickleServerConfig


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_server(aiohttp_server: Any, clock: FakeClock) -> MakeServer:
    async def make(base_path: str = "/", **config: Any) -> Served:
        config.setdefault("disconnect_poll_interval", 0.05)
        trickle = TrickleServer(TrickleServerConfig(**config), clock=clock)
        app = web.Application()
        trickle.setup(app, base_path)
        server = await aiohttp_server(app)
        return Served(server, trickle, str(server.make_url(trickle.base_path)))

    return make


@pytest.fixture
async def served(make_server: MakeServer) -> Served:
    """A server with autocreate, as the standalone CLI runs it."""
    return await make_server(autocreate=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
        yield session
