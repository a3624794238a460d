"""Live streams through the gateway: two noop runner processes behind it on loopback, MPEG-TS
published to the gateway's input channel, a viewer reading the gateway's output channel.

Kill the serving runner: the viewer's subscription keeps receiving frames (from the other
runner) without reconnecting, and param updates sent before and after the swap are applied on
the new runner. Swap limits and "no swap once the input is gone" run against fake runners (fast).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gateway_live_helpers import Viewer, publish_segments, runner_procs, serve, start_stream, stop_runner, until

from livestream.gateway import GatewayConfig, RunnerConfig, build_gateway_app
from livestream.gateway.live_routes import LIVE_KEY
from livestream.live.testsrc import decode_ts, make_ts_segments, read_number

pytestmark = pytest.mark.timeout(90)


async def test_failover_keeps_the_viewer_and_the_params(tmp_path: Path) -> None:
    # Made before any stream starts (encoding blocks this loop): outlasts the checks.
    segments = make_ts_segments(frames=30 * 24, width=128, height=128, audio=False)
    async with runner_procs(tmp_path, 2) as runners, aiohttp.ClientSession() as http:
        config = GatewayConfig(runners=tuple(RunnerConfig(r.url) for r in runners), refresh_interval=60.0,
                               random_share=0.0, live_health_interval=0.5)  # fmt: skip
        app = build_gateway_app(config)
        gw, gw_runner = await serve(app)
        try:
            live = app[LIVE_KEY]
            started = await start_stream(http, gw, "cam", 'params={"width": 128, "height": 128}')
            stream = live.get("cam")
            assert stream is not None and started["runner"] in [r.url for r in runners]
            viewer = Viewer()
            view_task = asyncio.create_task(viewer.run(http, started["subscribe_url"]))
            pub_task = asyncio.create_task(publish_segments(http, started["publish_url"], segments, chunk=8192))
            # Should a wait run out, its message says where the stream stood and what the runners logged.
            def figures() -> str:
                logs = "".join(f"\n--- {r.log.name}:\n" + r.log.read_text()[-1500:] for r in runners)
                return f"{json.dumps(stream.figures())}; viewer segments {len(viewer.segments)}{logs}"

            await until(lambda: len(viewer.segments) >= 2, what="first output", detail=figures)
            # An update before the swap: applied by the first runner.
            async with http.post(f"{gw}/live/video-to-video/cam/update", data=b'{"width": 96, "height": 96}') as resp:
                assert resp.status == 200
            await until(lambda: decode_ts(viewer.segments[-1][1])[0][-1].shape == (96, 96, 3), what="update applied",
                        detail=figures)  # fmt: skip
            first = stream.attempt
            # No swap yet: a runner slow to apply the resize (it imported torch for it, seconds on a
            # loaded machine) once went 10 s without output and was swapped out here.
            assert first is not None and stream.swaps == 0, stream.swap_log
            victim = next(r for r in runners if r.url == first.backend.url)
            other = next(r for r in runners if r is not victim)
            killed_at = time.monotonic()
            victim.proc.send_signal(signal.SIGKILL)
            await until(lambda: stream.swaps == 1, timeout=10, what="swap")
            assert stream.attempt is not None and stream.attempt.backend.url == other.url
            count = len(viewer.segments)
            await until(lambda: len(viewer.segments) >= count + 1 and viewer.segments[-1][0] > killed_at, what="output resumed")
            # The new runner started with the current params (96), then an update after the swap.
            assert decode_ts(viewer.segments[-1][1])[0][0].shape == (96, 96, 3)
            async with http.post(f"{gw}/live/video-to-video/cam/update", data=b'{"width": 64, "height": 64}') as resp:
                assert resp.status == 200
            await until(lambda: decode_ts(viewer.segments[-1][1])[0][-1].shape == (64, 64, 3), what="update after swap")
            async with http.get(f"{other.url}/live/cam/status") as resp:
                assert (await resp.json())["params"]["width"] == 64
            async with http.get(f"{gw}/live/video-to-video/cam/status") as resp:
                status = await resp.json()
            gs = status["gateway_status"]
            assert gs["runner"] == other.url and gs["swaps"] == 1 and gs["swap_log"][0]["from"] == victim.url
            assert "error" in gs and status.get("type") == "status"
            async with http.get(f"{gw}/metrics") as resp:
                text = await resp.text()
            assert f'livestream_gateway_live_runner{{backend="{other.url}",stream="cam"}} 1.0' in text
            assert 'livestream_gateway_live_swaps_total{stream="cam"} 1.0' in text
            # The input ends: the stream ends, the viewer's subscription ends cleanly, no swap.
            pub_task.cancel()  # the publisher's close() DELETEs the input channel
            await asyncio.gather(pub_task, return_exceptions=True)
            await asyncio.wait_for(view_task, 15)
            assert stream.ended == "input ended" and stream.swaps == 1
            numbers = [read_number(f) for _, data in viewer.segments for f in decode_ts(data)[0]]
            assert numbers[0] <= 30 and max(numbers) > 120  # frames from before and after the swap
            assert victim.url in {b.url for b in live.discovery.backends if b.suspended}
        finally:
            await stop_runner(gw_runner)


# --- swap limits against fake runners ------------------------------------------------------


class FakeLiveRunner:
    """Answers /health, /hardware/info, /openapi.json, and /live-video-to-video; `healthy`
    False makes /health fail (a dead runner, for the watchdog)."""

    def __init__(self) -> None:
        self.healthy = True
        self.starts: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "IDLE"}, status=200 if self.healthy else 503)

        async def hardware(request: web.Request) -> web.Response:
            return web.json_response({"pipeline": "live-video-to-video", "model_id": "noop", "gpu_info": {}})

        async def openapi(request: web.Request) -> web.Response:
            return web.json_response({"paths": {"/live-video-to-video": {"post": {}}}})

        async def start(request: web.Request) -> web.Response:
            self.starts.append(await request.json())
            return web.json_response({})

        app.router.add_get("/health", health)
        app.router.add_get("/hardware/info", hardware)
        app.router.add_get("/openapi.json", openapi)
        app.router.add_post("/live-video-to-video", start)
        return app


async def fake_fleet(n: int, **fields: Any) -> AsyncIterator[tuple[str, list[FakeLiveRunner], web.Application]]:
    fakes = [FakeLiveRunner() for _ in range(n)]
    servers = [await serve(f.app()) for f in fakes]
    config = GatewayConfig(runners=tuple(RunnerConfig(u) for u, _ in servers), refresh_interval=60.0, random_share=0.0,
                           live_health_interval=0.05, **fields)  # fmt: skip
    app = build_gateway_app(config)
    gw, gw_srv = await serve(app)
    try:
        yield gw, fakes, app
    finally:
        await stop_runner(gw_srv)
        for _, srv in servers:
            await stop_runner(srv)


async def test_swap_limits_and_old_runner_suspended() -> None:
    async for gw, fakes, app in fake_fleet(4):
        live = app[LIVE_KEY]
        async with aiohttp.ClientSession() as http:
            await start_stream(http, gw, "s", "pipeline=noop")
            stream = live.get("s")
            assert stream is not None
            for swap in range(2):
                attempt = stream.attempt
                assert attempt is not None
                serving = fakes[[b.url for b in live.discovery.backends].index(attempt.backend.url)]
                serving.healthy = False
                await until(lambda: stream.swaps == swap + 1, timeout=5, what=f"swap {swap + 1}")
                assert attempt.backend.suspended and attempt.backend.penalty == 5
                assert stream.attempt is not None and stream.attempt.backend is not attempt.backend
                assert live.server.get_channel(attempt.mid) is None  # the old runner's channels are gone
            # A third failure within 3 minutes: no more swaps, the stream ends.
            attempt = stream.attempt
            assert attempt is not None
            fakes[[b.url for b in live.discovery.backends].index(attempt.backend.url)].healthy = False
            await until(lambda: stream.ended is not None, timeout=5, what="end")
            assert stream.ended is not None and stream.ended.startswith("too many swaps") and stream.swaps == 2
            assert sum(len(f.starts) for f in fakes) == 3
            async with http.get(f"{gw}/live/video-to-video/s/status") as resp:
                assert resp.status == 200 and (await resp.json())["gateway_status"]["ended"].startswith("too many")


async def test_no_swap_once_input_is_gone_and_params_carried() -> None:
    async for gw, fakes, app in fake_fleet(2):
        live = app[LIVE_KEY]
        async with aiohttp.ClientSession() as http:
            started = await start_stream(http, gw, "s", 'pipeline=noop&params={"a": 1}')
            stream = live.get("s")
            assert stream is not None
            async with http.post(f"{gw}/live/video-to-video/s/update", data=json.dumps({"b": 2}).encode()) as resp:
                assert resp.status == 200
            async with http.post(f"{gw}/live/video-to-video/nope/update", data=b"{}") as resp:
                assert resp.status == 404
            # The first runner dies: the second starts with the merged params.
            first = stream.attempt
            # No swap yet: a runner slow to apply the resize (it imported torch for it, seconds on a
            # loaded machine) once went 10 s without output and was swapped out here.
            assert first is not None and stream.swaps == 0, stream.swap_log
            serving = [f for f in fakes if f.starts][0]
            serving.healthy = False
            await until(lambda: stream.swaps == 1, timeout=5, what="swap")
            other = [f for f in fakes if f is not serving][0]
            assert other.starts[0]["params"] == {"a": 1, "b": 2}
            assert other.starts[0]["model_id"] == "noop"
            assert {k for k in other.starts[0] if k.endswith("_url")} == {"subscribe_url", "publish_url", "control_url", "events_url"}
            # The input ends (the publisher deletes its channel); then the runner dies: no swap.
            async with http.delete(started["publish_url"]) as resp:
                assert resp.status == 200
            await until(lambda: stream.input_ended, timeout=5, what="input end")
            other.healthy = False
            serving.healthy = True
            await until(lambda: stream.ended is not None, timeout=5, what="end")
            assert stream.swaps == 1 and len(serving.starts) == 1


async def test_auth_webhook_sets_pipeline_params_and_refuses() -> None:
    calls: list[tuple[dict[str, Any], str]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append((body, request.headers.get("x-api-key", "")))
        if body["stream"] == "denied":
            return web.Response(status=401)
        return web.json_response({"pipeline": "noop", "stream_id": "sid-1", "pipeline_parameters": {"p": 1},
                                  "rtmp_output_url": "rtmp://127.0.0.1:1/live/x"})  # fmt: skip

    hook_app = web.Application()
    hook_app.router.add_post("/auth", hook)
    hook_url, hook_srv = await serve(hook_app)
    try:
        async for gw, fakes, _app in fake_fleet(1, live_auth_webhook=hook_url + "/auth", live_auth_api_key="k"):
            async with aiohttp.ClientSession() as http:
                body = await start_stream(http, gw, "ok", "pipeline=other&params={}")
                assert body["stream_id"] == "sid-1" and body["rtmp_output_url"] == "rtmp://127.0.0.1:1/live/x"
                assert fakes[0].starts[0]["model_id"] == "noop" and fakes[0].starts[0]["params"] == {"p": 1}
                assert fakes[0].starts[0]["stream_id"] == "sid-1"
                async with http.get(f"{gw}/live/video-to-video/sid-1/status") as resp:
                    assert resp.status == 200
                form = aiohttp.FormData({"source_id": "s1", "source_type": "rtmpconn", "query": ""})
                async with http.post(f"{gw}/live/video-to-video/denied/start", data=form) as resp:
                    assert resp.status == 403
                form = aiohttp.FormData({"source_id": "s1", "source_type": "rtmpconn", "query": "params=nojson"})
                async with http.post(f"{gw}/live/video-to-video/bad/start", data=form) as resp:
                    assert resp.status == 400
                assert calls[0][1] == "k" and calls[0][0]["type"] == "rtmp"
    finally:
        await stop_runner(hook_srv)
