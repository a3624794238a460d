"""Fixtures for the live runner tests: the stand-in orchestrator and engines registered with it."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from livestream.app import build_app
from livestream.live import LIVE_CONFIG_KEY, LIVE_REGISTRY_KEY, SessionConfig
from livestream.liverunner import LIVE_RUNNER_CONFIG_KEY, LIVE_RUNNER_KEY, LiveRunner, live_runner_config
from livestream.settings import Settings
from pipelines.live import LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams, NoopPipeline

from liverunner_standin import StandinOrchestrator

TEST_CONFIG = SessionConfig(status_interval=0.25, input_timeout=5.0, stop_timeout=3.0, max_restarts=1, max_queue_lag=5.0)


class SlowLoadingPipeline(NoopPipeline):
    """Takes a moment to load: the runner says `unavailable` first."""

    name = "slow"

    def load(self, params: Any) -> None:
        time.sleep(0.6)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def standin() -> AsyncIterator[StandinOrchestrator]:
    orch = StandinOrchestrator(interval="200ms", ttl=20.0, sweep=0.2)
    await orch.start()
    try:
        yield orch
    finally:
        await orch.close()


@dataclasses.dataclass
class Engine:
    server: TestServer
    app: web.Application
    port: int

    @property
    def runner(self) -> LiveRunner:
        return self.app[LIVE_RUNNER_KEY]

    async def close(self) -> None:
        await self.server.close()


EngineFactory = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def engine(standin: StandinOrchestrator) -> AsyncIterator[EngineFactory]:
    started: list[Engine] = []

    async def start(
        *, model: str = "noop", capacity: int = 2, runner_id: str = "", prefix: str = "/runner", **config: Any
    ) -> Engine:
        port = free_port()
        settings = Settings(
            host="127.0.0.1",
            port=port,
            pipeline="live-video-to-video",
            model_id=model,
            max_live_sessions=capacity,
            orch_addr=standin.base,
            orch_secret=standin.orch_secret,
            runner_url=f"http://127.0.0.1:{port}{prefix}",
            runner_app=f"live-video-to-video/{model}",
            runner_capacity=capacity,
            runner_id=runner_id,
            runner_metadata='{"region": "test"}',
            runner_price="0.5/hour",
        )
        app = build_app(settings)
        app[LIVE_CONFIG_KEY] = TEST_CONFIG
        registry = default_live_registry()
        registry.register(LivePipelineSpec("slow", NoopParams, SlowLoadingPipeline, "loads in 0.6 s"))
        app[LIVE_REGISTRY_KEY] = registry
        base = live_runner_config(settings)
        assert base is not None
        app[LIVE_RUNNER_CONFIG_KEY] = dataclasses.replace(base, backoff_initial=0.05, backoff_max=0.4, **config)
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        eng = Engine(server, app, port)
        started.append(eng)
        return eng

    try:
        yield start
    finally:
        for eng in started:
            await eng.close()
