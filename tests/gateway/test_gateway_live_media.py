"""RTMP and WHIP in, WHEP and RTMP out at the gateway, with real parts: the ffmpeg binary
publishes RTMP to the gateway, two noop runner processes behind it, an aiortc WHEP viewer and an
ffmpeg RTMP listener (the stream's RTMP output) read the processed output back.

Kill the serving runner: the WHEP viewer keeps receiving frames without reconnecting, and the
RTMP output goes on in the same connection. Then an aiortc WHIP publisher's numbered frames come
back, in order, to a WHEP viewer, and the engine's player page plays it in headless Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

import aiohttp
import av
import pytest

from livestream.gateway import GatewayConfig, build_gateway_app
from livestream.gateway.live_media import LIVE_MEDIA_KEY
from livestream.gateway.live_routes import LIVE_KEY
from livestream.live.testsrc import read_number
from livestream.webrtc.client import WhepClient, WhipClient
from livestream.webrtc.testsrc import NumberedVideoTrack
from gateway_live_helpers import (first_output, free_port, gateway_config, obs_publish, rtmp_listener, runner_procs,
                                  serve, serving, stop_runner, until)

sys.path.insert(0, str(Path(__file__).parents[1]))
from webrtc.chromium import Browser, chromium_path  # noqa: E402

pytestmark = pytest.mark.timeout(120)


async def test_rtmp_in_whep_and_rtmp_out_survive_a_swap(tmp_path: Path) -> None:
    out_file = tmp_path / "out.flv"
    publisher: asyncio.subprocess.Process | None = None
    try:
        # The stream's RTMP output: a real ffmpeg listening for a publisher, copying to a file.
        async with contextlib.AsyncExitStack() as stack:
            runners = await stack.enter_async_context(runner_procs(tmp_path, 2))
            listener = await stack.enter_async_context(rtmp_listener(out_file))
            config = gateway_config(runners, free_port(), rtmp_port=0, rtmp_output=listener)
            gw, app = await stack.enter_async_context(serving(config))
            http = await stack.enter_async_context(aiohttp.ClientSession())
            media = app[LIVE_MEDIA_KEY]
            assert media.rtmp is not None
            publisher = await asyncio.create_subprocess_exec(
                *obs_publish(f"rtmp://127.0.0.1:{media.rtmp.port}/live/cam", 10, "-b:a", "96k"), stderr=asyncio.subprocess.PIPE
            )
            stream = await first_output(app, "cam", "RTMP")
            live = app[LIVE_KEY]
            viewer = await WhepClient.connect(http, f"{gw}/live/cam/whep", codec="H264")
            try:
                first = await asyncio.wait_for(viewer.video.recv(), 15)
                assert isinstance(first, av.VideoFrame) and (first.width, first.height) == (128, 128)
                attempt = stream.attempt
                assert attempt is not None
                victim = next(r for r in runners if r.url == attempt.backend.url)
                killed_at = time.monotonic()
                victim.proc.send_signal(signal.SIGKILL)
                await until(lambda: stream.swaps == 1, timeout=10, what="swap")
                # The same WHEP connection gets frames from the other runner.
                count = stream.segments_out
                await until(lambda: stream.segments_out > count, what="output after the swap")
                frames_after = 0
                while frames_after < 10:
                    await asyncio.wait_for(viewer.video.recv(), 10)
                    if time.monotonic() > killed_at:
                        frames_after += 1
                assert viewer.pc.connectionState == "connected"
                async with http.get(f"{gw}/live/cam/status") as resp:
                    media_status = (await resp.json())["gateway_status"]["media"]
                assert media_status["whep"]["viewers"] == 1 and media_status["ingest"]["video_codec"] == "h264"
                assert media_status["rtmp_outputs"][0]["connected"] and media_status["packets_out"] > 0
            finally:
                await viewer.close()
            # The publisher ends: the stream ends, the RTMP output closes, the listener exits.
            rc = await asyncio.wait_for(publisher.wait(), 30)
            assert rc == 0, (await publisher.stderr.read()).decode() if publisher.stderr else rc
            await until(lambda: stream.ended is not None, timeout=20, what="stream end")
            assert stream.ended == "input ended" and stream.swaps == 1
            # WHIP in (aiortc) on go-livepeer's path, WHEP out, on the runner left.
            source = NumberedVideoTrack(128, 128, fps=30)
            seen: list[dict[str, str]] = []

            async def on_end(session: object, ctx: object, params: aiohttp.TraceRequestEndParams) -> None:
                seen.append(dict(params.response.headers))

            trace = aiohttp.TraceConfig()
            trace.on_request_end.append(on_end)
            whip_http = await stack.enter_async_context(aiohttp.ClientSession(trace_configs=[trace]))
            whip = await WhipClient.connect(whip_http, f"{gw}/live/video-to-video/cam2/whip", source, codec="H264")
            assert seen[0]["Livepeer-Playback-URL"] == f"{gw}/live/cam2/whep"
            assert whip.location is not None and whip.location.startswith(f"{gw}/live/video-to-video/cam2/whip/")
            try:
                await until(lambda: live.get("cam2") is not None, what="stream started by the WHIP publish")
                viewer = await WhepClient.connect(http, f"{gw}/live/cam2/whep", codec="H264")
                try:
                    numbers: list[int] = []
                    while len(numbers) < 20:
                        frame = await asyncio.wait_for(viewer.video.recv(), 20)
                        assert isinstance(frame, av.VideoFrame)
                        numbers.append(read_number(frame.to_ndarray(format="rgb24")))
                    assert numbers[-1] > numbers[0]  # frames of the publisher, in order
                finally:
                    await viewer.close()
                # The engine's player page, served by the gateway, in headless Chromium.
                # Its param controls come from the runners' schemas (the gateway's /live/pipelines)
                # and a change goes through the gateway to the runner serving the stream.
                if chromium_path() is not None:
                    async with Browser() as browser:
                        player = await browser.open(f"{gw}/live/cam2")
                        await player.wait_for("window.playerState && playerState.frames > 5", timeout=30)
                        await player.wait_for("!!document.querySelector('#params input[name=width]')", timeout=15)
                        await player.eval(
                            "(() => { const i = document.querySelector('#params input[name=width]');"
                            " i.value = '96'; i.dispatchEvent(new Event('change')); return true; })()"
                        )
                        cam2 = live.get("cam2")
                        assert cam2 is not None and cam2.attempt is not None
                        runner_url = cam2.attempt.backend.url
                        widths: list[object] = []

                        async def runner_width() -> None:
                            async with http.get(f"{runner_url}/live/cam2/status") as resp:
                                widths.append((await resp.json())["params"].get("width"))

                        while widths[-1:] != [96]:
                            await asyncio.wait_for(runner_width(), 5)
                            assert len(widths) < 200, widths  # 10 s
                            await asyncio.sleep(0.05)
                        await player.close()
            finally:
                await whip.close()
            whip_stream = live.get("cam2")
            if whip_stream is not None:
                await until(lambda: whip_stream.ended is not None, timeout=20, what="WHIP stream end")
    finally:
        if publisher is not None and publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
    with av.open(str(out_file)) as container:
        video = [f for f in container.decode(video=0)]
    assert len(video) >= 30 * 4 and (video[0].width, video[0].height) == (128, 128)
    if chromium_path() is None:
        pytest.skip("the player page in Chromium not checked: Debian's chromium is not installed")


async def test_playback_is_public_and_publishing_needs_a_key() -> None:
    """With `--api-key`, as the engine without `--protect-playback`: the player page, its script
    and WHEP are open; WHIP and the live routes need the key."""
    app = build_gateway_app(GatewayConfig(runners=(), refresh_interval=60.0, api_keys=("k",)))
    gw, gw_runner = await serve(app)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gw}/live/cam") as resp:
                assert resp.status == 200 and "html" in resp.content_type
            async with http.get(f"{gw}/webrtc/webrtc.js") as resp:
                assert resp.status == 200
            offer = {"Content-Type": "application/sdp"}
            async with http.post(f"{gw}/live/cam/whep", data="v=0\r\n", headers=offer) as resp:
                assert resp.status != 401  # refused for what it is (a bad offer), not for the key
            async with http.post(f"{gw}/live/cam/whip", data="v=0\r\n", headers=offer) as resp:
                assert resp.status == 401
            async with http.get(f"{gw}/live/cam/status") as resp:
                assert resp.status == 401
            async with http.post(f"{gw}/live/cam/whip", data="v=0\r\n", headers={**offer, "Authorization": "Bearer k"}) as resp:
                assert resp.status == 400  # past the key: the offer itself is refused
    finally:
        await stop_runner(gw_runner)
