"""Fixtures for the live runner tests: the stand-in orchestrator and engines registered with it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from livestream.app import build_app
from livestream.live import LIVE_CONFIG_KEY, LIVE_REGISTRY_KEY
from livestream.liverunner import LIVE_RUNNER_CONFIG_KEY, live_runner_config
from livestream.settings import Settings
from pipelines.live import LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams

from liverunner_helpers import TEST_CONFIG, Engine, EngineFactory, SlowLoadingPipeline, free_port
from liverunner_standin import StandinOrchestrator

@pytest.fixture
async def standin() -> AsyncIterator[StandinOrchestrator]:
    orch = StandinOrchestrator(interval="200ms", ttl=20.0, sweep=0.2)
    await orch.start()
    try:
        yield orch
    finally:
        await orch.close()


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
