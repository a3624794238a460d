"""Live streams on go-livepeer Live Runners through the gateway: the stand-in Live Runner
orchestrator of the live-runner tests, a real engine registered with it as a live runner (noop),
and a gateway with no runner of its own. The gateway reserves a session through the
orchestrator's discovery, starts the app's stream through its proxy, publishes the input to the
orchestrator's channels and relays the output to its own viewer channel; params go on the
session's control channel; the input's end releases the session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from livestream.app import build_app
from livestream.gateway import GatewayConfig, build_gateway_app
from livestream.gateway.live_routes import LIVE_KEY
from livestream.live import LIVE_CONFIG_KEY
from livestream.live.testsrc import decode_ts, make_ts_segments
from livestream.liverunner import LIVE_RUNNER_CONFIG_KEY, live_runner_config
from livestream.settings import Settings
from gateway_live_helpers import Viewer, publish_segments, serve, start_stream, stop_accepting, stop_runner, until

sys.path.insert(0, str(Path(__file__).parents[1] / "liverunner"))
from liverunner_helpers import TEST_CONFIG, free_port  # noqa: E402
from liverunner_standin import StandinOrchestrator  # noqa: E402

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def standin() -> AsyncIterator[StandinOrchestrator]:
    orch = StandinOrchestrator(interval="200ms", ttl=20.0, sweep=0.2)
    await orch.start()
    try:
        yield orch
    finally:
        await orch.close()


@pytest.fixture
async def live_runner(standin: StandinOrchestrator) -> AsyncIterator[str]:
    """An engine registered with the stand-in as a live runner of `live-video-to-video/noop`."""
    port = free_port()
    settings = Settings(
        host="127.0.0.1", port=port, pipeline="live-video-to-video", model_id="noop", max_live_sessions=2,
        orch_addr=standin.base, orch_secret=standin.orch_secret, runner_url=f"http://127.0.0.1:{port}/runner",
        runner_app="live-video-to-video/noop", runner_capacity=2,
    )  # fmt: skip
    app = build_app(settings)
    app[LIVE_CONFIG_KEY] = TEST_CONFIG
    base = live_runner_config(settings)
    assert base is not None
    app[LIVE_RUNNER_CONFIG_KEY] = dataclasses.replace(base, backoff_initial=0.05, backoff_max=0.4)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await stop_accepting(server.runner)
        await server.close()


async def test_stream_on_a_live_runner(standin: StandinOrchestrator, live_runner: str) -> None:
    segments = make_ts_segments(frames=30 * 20, width=128, height=128, audio=False)  # before the clock runs
    await until(lambda: any(r.ready for r in standin.runners.values()), what="live runner registered")
    config = GatewayConfig(runners=(), refresh_interval=60.0, live_health_interval=0.5,
                           live_runner_orchestrators=(standin.base,))  # fmt: skip
    app = build_gateway_app(config)
    gw, gw_runner = await serve(app)
    try:
        async with aiohttp.ClientSession() as http:
            started = await start_stream(http, gw, "lr", 'params={"width": 96, "height": 96}')
            assert started["runner"].startswith(standin.base)  # the session URL on the orchestrator
            stream = app[LIVE_KEY].get("lr")
            assert stream is not None and stream.attempt is not None and stream.attempt.session is not None
            session_id = stream.attempt.session.session_id
            viewer = Viewer()
            view_task = asyncio.create_task(viewer.run(http, started["subscribe_url"]))
            pub_task = asyncio.create_task(publish_segments(http, started["publish_url"], segments))
            # The runner's output, relayed from the orchestrator's channel: the start params applied.
            await until(lambda: bool(viewer.segments), what="first output")
            assert decode_ts(viewer.segments[0][1])[0][0].shape == (96, 96, 3)
            async with http.post(f"{gw}/live/video-to-video/lr/update", data=b'{"width": 64, "height": 64}') as resp:
                assert resp.status == 200
            await until(lambda: decode_ts(viewer.segments[-1][1])[0][-1].shape == (64, 64, 3), what="update applied")
            async with http.get(f"{gw}/live/video-to-video/lr/status") as resp:
                status = await resp.json()
            assert status["gateway_status"]["runner"] == started["runner"] and status["gateway_status"]["swaps"] == 0
            # The input ends: the stream ends and the live runner's session is released.
            pub_task.cancel()  # the publisher's close() DELETEs the input channel
            await asyncio.gather(pub_task, return_exceptions=True)
            await until(lambda: stream.ended is not None, what="stream end")
            await asyncio.wait_for(view_task, 15)
            assert stream.ended == "input ended"
            await until(lambda: session_id in standin.released, what="session released")
    finally:
        await stop_runner(gw_runner)
