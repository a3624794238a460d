"""Fixtures for the RTMP tests: the engine app with RTMP on a free loopback port and short timers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rtmp_helpers import RTMP_TEST_CONFIG, Engine, EngineFactory, make_numbered_source

from livestream.app import build_app
from livestream.live import LIVE_CONFIG_KEY
from livestream.protocols import RTMP_SERVER_KEY
from livestream.settings import Settings


@pytest.fixture(scope="session")
def numbered_source(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    cache: dict[int, Path] = {}

    def make(frames: int) -> Path:
        if frames not in cache:
            cache[frames] = make_numbered_source(tmp_path_factory.mktemp("src") / f"numbered{frames}.mkv", frames)
        return cache[frames]

    return make


@pytest.fixture
async def rtmp_engine_factory() -> AsyncIterator[EngineFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**settings: Any) -> Engine:
        base: dict[str, Any] = {"host": "127.0.0.1", "rtmp_port": 0, "live_pipeline": "noop", "rtmp_idle_timeout": 3.0}
        app = build_app(Settings(**(base | settings)))
        app[LIVE_CONFIG_KEY] = RTMP_TEST_CONFIG
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client, app[RTMP_SERVER_KEY]

    yield make
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def rtmp_engine(rtmp_engine_factory: EngineFactory) -> Engine:
    return await rtmp_engine_factory()
