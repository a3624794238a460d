"""Fixtures for the live tests: an orchestrator-side trickle server on a loopback port, the
engine app with short timers, and generated H.264+AAC MPEG-TS streams."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import torch  # noqa: F401  (imported once here: a first import takes seconds on loaded cores)
from aiohttp.test_utils import TestClient, TestServer

from livestream.app import build_app
from livestream.live import LIVE_CONFIG_KEY, LIVE_REGISTRY_KEY, SessionConfig
from livestream.live.testsrc import make_ts_segments
from livestream.settings import Settings
from pipelines.live import LivePipelineRegistry, LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams, NoopPipeline
from trickle import TrickleServerConfig, create_trickle_app

from live_helpers import TEST_CONFIG  # tests import it from there, not from `conftest`



class CrashingPipeline(NoopPipeline):
    """Raises on every batch (the engine restarts it, then gives up)."""

    name = "crash"
    passthrough = False

    def process(self, frames: Any) -> Any:
        raise RuntimeError("boom")


class BrokenPipeline(NoopPipeline):
    """Cannot load (a missing model, say): a runner serving it is unhealthy."""

    name = "broken"

    def load(self, params: Any) -> None:
        raise RuntimeError("weights not found")


def test_registry() -> LivePipelineRegistry:
    registry = default_live_registry()
    registry.register(LivePipelineSpec("crash", NoopParams, CrashingPipeline, "always raises"))
    registry.register(LivePipelineSpec("broken", NoopParams, BrokenPipeline, "never loads"))
    return registry


@functools.cache
def _segments(frames: int, size: int, audio: bool) -> list[bytes]:
    return make_ts_segments(frames=frames, width=size, height=size, audio=audio)


@pytest.fixture
def ts_segments() -> Callable[..., list[bytes]]:
    """`ts_segments(frames=90, size=128, audio=True)`: 1-second MPEG-TS segments (cached)."""

    def make(frames: int = 90, size: int = 128, audio: bool = True) -> list[bytes]:
        return _segments(frames, size, audio)

    return make


@pytest.fixture
async def orchestrator() -> AsyncIterator[str]:
    """A standalone trickle server (autocreate) on a real loopback port; yields its base URL."""
    server = TestServer(create_trickle_app(TrickleServerConfig(autocreate=True), base_path="/ai/trickle/"))
    await server.start_server()
    try:
        yield str(server.make_url("/ai/trickle/"))
    finally:
        await server.close()


EngineFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def engine_factory() -> AsyncIterator[EngineFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(settings: Settings | None = None, config: SessionConfig = TEST_CONFIG) -> TestClient[Any, Any]:
        app = build_app(settings or Settings(host="127.0.0.1", port=0))
        app[LIVE_CONFIG_KEY] = config
        app[LIVE_REGISTRY_KEY] = test_registry()
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def engine(engine_factory: EngineFactory) -> TestClient[Any, Any]:
    return await engine_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
