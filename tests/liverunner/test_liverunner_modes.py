"""Live runner modes against the stand-in orchestrator: a static `-liveRunnerConfig` entry (health
check, sessions without heartbeats), a single-shot batch app, WHEP through `POST {control}/proxy`,
the token check on later requests, and channels deleted when a start fails."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

import livestream.api as api
from livestream.app import build_app
from livestream.live import LIVE_MANAGER_KEY
from livestream.liverunner import LIVE_RUNNER_CONFIG_KEY, LIVE_RUNNER_KEY, live_runner_config
from livestream.liverunner.client import LiveRunnerClient, LiveRunnerClientError
from livestream.settings import Settings
from pipelines.batch.outputs import GeneratedImage
from pipelines.registry import PipelineRegistry

from liverunner_helpers import EngineFactory, free_port
from liverunner_standin import StandinOrchestrator
from server_close import close_test_server
from test_liverunner_e2e import push_and_receive, ready_runners, start_stream, wait_for


async def test_static_entry_health_and_sessions(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    """`--app` without `--orch-addr`: listed by the operator; `health_url` answers 503 while the
    pipeline loads and 200 once ready (the exact status the orchestrator compares); the engine
    never heartbeats yet serves the sessions the orchestrator reserves and proxies."""
    standin.health_interval = 0.1
    eng = await engine(model="slow", orch_addr="", orch_secret="")
    config = eng.runner.config
    assert config.static
    entry = config.static_entry()
    async with aiohttp.ClientSession() as http:
        async with http.get(entry["health_url"]) as response:
            assert response.status == 503 and (await response.json())["status"] == "unavailable"
        async with http.get(f"http://127.0.0.1:{eng.port}/health") as response:  # ai-runner's /health: 200 + status
            assert response.status == 200 and (await response.json())["status"] == "LOADING"
        runner = await standin.add_static(entry)
        assert not runner.ready  # loading: hidden from discovery
        await wait_for(lambda: runner.ready)
        assert (runner.runner_id, False) in standin.health_checks
        session, stream = await start_stream(http, standin, app="live-video-to-video/slow")
        assert stream["input_url"].startswith(standin.base)
        assert (await session.call("GET", "stream/status"))["session_id"] == session.session_id
        received = await push_and_receive(http, stream)
        assert received and received[0][0] == 0x47
        # Stopped by the client, or ended by itself once the input stopped (the engine then calls
        # `{control}/stop`): either way the orchestrator released it.
        with contextlib.suppress(LiveRunnerClientError):
            await session.call("POST", "stream/stop")
        await wait_for(lambda: session.session_id in standin.released and not eng.runner.sessions.ids())
        # A static runner cannot heartbeat; the engine never tried.
        assert not standin.heartbeats and eng.runner.registration.heartbeats == 0
        async with http.post(f"{standin.base}/runners/heartbeat", json=entry | {"runner_id": runner.runner_id}) as response:
            assert response.status == 400


async def test_static_unhealthy_releases_sessions(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    standin.health_interval = 0.1
    eng = await engine(orch_addr="", orch_secret="")
    runner = await standin.add_static(eng.runner.config.static_entry())
    await wait_for(lambda: runner.ready)
    async with aiohttp.ClientSession() as http:
        session, _ = await start_stream(http, standin)
        eng.runner._health = lambda: "ERROR"  # the pipeline broke: the health check says 503
        await wait_for(lambda: not runner.ready and session.session_id in standin.released)


class _FakeTextToImage:
    def __init__(self, model_id: str, model_dir: Path | None = None) -> None:
        self.calls = 0

    def generate(self, inp: Any) -> list[GeneratedImage]:
        self.calls += 1
        return [GeneratedImage(image=Image.new("RGB", (inp.width, inp.height), (255, 0, 0)), seed=1, nsfw=False)]


@pytest.fixture
async def batch_engine(standin: StandinOrchestrator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestServer]:
    """`livestream serve --orch-addr … --app text-to-image/fake-model`: a single-shot runner."""

    def create_registry(s: Settings) -> PipelineRegistry:
        return PipelineRegistry(
            model_dir=None, default_models={}, pinned=(s.pipeline, s.model_id) if s.pipeline and s.model_id else None,
            max_queue=2, factories={"text-to-image": _FakeTextToImage},
        )  # fmt: skip

    monkeypatch.setattr(api, "create_registry", create_registry)
    port = free_port()
    settings = Settings(
        host="127.0.0.1", port=port, pipeline="text-to-image", model_id="fake-model", orch_addr=standin.base,
        orch_secret=standin.orch_secret, runner_url=f"http://127.0.0.1:{port}", runner_app="text-to-image/fake-model",
    )  # fmt: skip
    app = build_app(settings)
    base = live_runner_config(settings)
    assert base is not None and base.mode == "single-shot"
    app[LIVE_RUNNER_CONFIG_KEY] = dataclasses.replace(base, backoff_initial=0.05, backoff_max=0.4)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield server
    finally:
        await close_test_server(server)


async def test_single_shot_batch_app(standin: StandinOrchestrator, batch_engine: TestServer) -> None:
    """A batch app registers `mode: single-shot`; the client calls `/apps/{rid}/app/{task}` and the
    orchestrator reserves a session for that one request, proxies it, and releases it."""
    await wait_for(lambda: bool(ready_runners(standin)))
    status, body = standin.heartbeats[-1]
    assert status == 200 and body["mode"] == "single-shot" and body["app"] == "text-to-image/fake-model"
    async with aiohttp.ClientSession() as http:
        runners = await LiveRunnerClient(standin.base, http).discovery(app="text-to-image/fake-model")
        assert runners and runners[0].mode == "single-shot" and runners[0].url.endswith("/app")
        with pytest.raises(Exception) as info:  # no sessions to reserve on a single-shot runner
            await LiveRunnerClient(standin.base, http).reserve(runners[0].runner_id)
        assert getattr(info.value, "status", None) == 400
        async with http.post(f"{runners[0].url}/text-to-image", json={"prompt": "a cat", "width": 8, "height": 8}) as response:
            assert response.status == 200, await response.text()
            images = (await response.json())["images"]
        assert len(images) == 1
    assert standin.proxied[-1]["path"] == "/text-to-image" and standin.proxied[-1]["Livepeer-Session-Id"]
    sid = standin.proxied[-1]["Livepeer-Session-Id"]
    assert sid in standin.released  # released when the request ended
    reserved = [m["session"] for _, m in standin.o2r_sent if m.get("event") == "reserved"]
    assert sid in reserved
    assert not batch_engine.app[LIVE_RUNNER_KEY].sessions.ids()


async def test_whep_through_the_session_proxy(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    async with aiohttp.ClientSession() as http:
        session, stream = await start_stream(http, standin)
        # The engine asked the orchestrator for a session proxy to its own WHEP resource.
        assert standin.proxy_requests == [{"target_url": f"http://127.0.0.1:{eng.port}/live/{session.session_id}"}]
        whep_url = stream["whep_url"]
        assert whep_url.startswith(f"{standin.base}/run/") and whep_url.endswith("/whep")
        assert (await session.call("GET", "stream/status"))["whep_url"] == whep_url
        # The public URL reaches the engine's `POST /live/{sid}/whep` with the session headers.
        async with http.post(whep_url, data="v=0\r\n", headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415  # the engine's WHEP route: an offer must be application/sdp
        proxied = standin.proxied[-1]
        assert proxied["path"] == f"/live/{session.session_id}/whep" and proxied["Livepeer-Session-Id"] == session.session_id
        await session.stop()
        async with http.post(whep_url, data="v=0\r\n", headers={"Content-Type": "application/sdp"}) as response:
            assert response.status == 404  # the proxy ended with the session


async def test_later_requests_must_carry_the_verified_token(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    async with aiohttp.ClientSession() as http:
        session, _ = await start_stream(http, standin)
        good = {k: v for k, v in standin.proxied[-1].items() if k.startswith("Livepeer-Session")}
        url = f"http://127.0.0.1:{eng.port}/runner/stream"
        for headers in (good | {"Livepeer-Session-Token": "forged"}, good | {"Livepeer-Session-Control": f"{standin.base}/x"}):
            for method, path in (("GET", "status"), ("POST", "params"), ("POST", "stop"), ("POST", "start")):
                async with http.request(method, f"{url}/{path}", json={}, headers=headers) as response:
                    assert response.status == 403, (method, path)
        assert eng.runner.sessions.ids() == [session.session_id]
        async with http.get(f"{url}/status", headers=good) as response:
            assert response.status == 200


async def test_failed_start_deletes_its_channels(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    manager = eng.app[LIVE_MANAGER_KEY]

    async def broken_start(**kwargs: Any) -> Any:
        raise RuntimeError("the pipeline could not start")

    original = manager.start
    manager.start = broken_start  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as http:
        client = LiveRunnerClient(standin.base, http)
        session = await client.reserve((await client.discovery())[0])
        with pytest.raises(Exception):
            await session.call("POST", "stream/start", {"params": {}})
        assert not [name for name in standin.trickle.channels if name.startswith(session.session_id)]
        assert not eng.runner.sessions.ids()
        manager.start = original  # type: ignore[method-assign]
        stream = await session.call("POST", "stream/start", {"params": {}})  # the session is still usable
        assert stream["input_url"]
