"""go-livepeer's WHIP path, and an RTMP publish URL, take the start hook's stream settings: the
query (`pipeline`, `params`, `streamId`, `rtmpOutput`, `orchestrator`) and the live auth webhook's
answer over it, through the same code as the start hook. Real parts: a noop runner process, an
aiortc WHIP publisher, ffmpeg publishing RTMP, a real HTTP webhook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from aiohttp import web

import asyncio

from livestream.gateway.live_media import LIVE_MEDIA_KEY
from livestream.gateway.live_routes import LIVE_KEY
from livestream.webrtc.client import WebRTCClientError, WhipClient
from livestream.webrtc.testsrc import NumberedVideoTrack
from gateway_live_helpers import (first_output, free_port, gateway_config, obs_publish, runner_procs, serve, serving,
                                  stop_runner, until)

pytestmark = pytest.mark.timeout(120)

async def test_whip_query_and_webhook_set_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hooked: list[dict[str, Any]] = []

    async def webhook(request: web.Request) -> web.Response:
        body = await request.json()
        hooked.append(body)
        if body["stream"] == "denied":
            return web.Response(status=403)
        if body["stream"] == "hooked":  # the operator's answer wins over the query
            return web.json_response({"stream_id": "hook-id", "pipeline_parameters": {"width": 80}})
        return web.json_response({})

    hook_app = web.Application()
    hook_app.router.add_post("/auth", webhook)
    hook_url, hook_runner = await serve(hook_app)
    try:
        async with runner_procs(tmp_path, 1) as runners:
            config = gateway_config(runners, free_port(), live_auth_webhook=f"{hook_url}/auth")
            async with serving(config) as (gw, app), aiohttp.ClientSession() as http:
                live = app[LIVE_KEY]
                whip_url = f"{gw}/live/video-to-video/%s/whip?%s"
                # The URL guard as an operator has it (the tests allow loopback targets); the runner
                # process was started with its own environment already.
                monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "0")
                # Bad params and a publisher's rtmpOutput to a loopback address are refused before
                # any runner is asked, with go-livepeer's messages.
                for stream, query, status, text in [
                    ("bad", "params=%7Bnot-json", 400, "Invalid pipeline params"),
                    ("bad", urlencode({"params": "[1]"}), 400, "Invalid pipeline params"),
                    ("bad", urlencode({"rtmpOutput": "rtmp://127.0.0.1:1935/live/x"}), 400, "rtmpOutput refused"),
                    ("bad", urlencode({"rtmpOutput": "http://example.com/x"}), 400, "Invalid rtmpOutput"),
                    ("denied", "", 403, "refused"),
                ]:
                    source = NumberedVideoTrack(64, 64, fps=30)
                    with pytest.raises(WebRTCClientError) as refused:
                        await WhipClient.connect(http, whip_url % (stream, query), source, codec="H264")
                    assert refused.value.status == status and text in str(refused.value), (query, refused.value)
                    assert live.get(stream) is None
                monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "1")
                # The query's settings: the stream runs with them.
                query = urlencode({"pipeline": "noop", "params": json.dumps({"width": 96}), "streamId": "sid-7",
                                   "orchestrator": "127.0.0.1"})  # fmt: skip
                source = NumberedVideoTrack(64, 64, fps=30)
                whip = await WhipClient.connect(http, whip_url % ("cam", query), source, codec="H264")
                try:
                    stream = live.get("cam")
                    assert stream is not None
                    assert (stream.stream_id, stream.model_id, stream.params) == ("sid-7", "noop", {"width": 96})
                    await until(lambda: stream.segments_out >= 1, what="first output segment")
                    async with http.get(f"{gw}/live/video-to-video/sid-7/status") as resp:
                        assert resp.status == 200, await resp.text()
                        status = await resp.json()
                    assert status["gateway_status"]["media"]["whip"]["frames"] > 0
                    body = next(b for b in hooked if b["stream"] == "cam")
                    assert body["type"] == "livepeer-whip" and "streamId=sid-7" in body["query_params"]
                    assert body["status_url"] == f"{gw}/live/video-to-video/sid-7/status"
                    assert body["whep_url"] == f"{gw}/live/{quote('cam')}/whep"
                finally:
                    await whip.close()
                await until(lambda: live.get("cam") is None, what="stream end")
                # The webhook's answer over the query's.
                query = urlencode({"params": json.dumps({"width": 96}), "streamId": "sid-8"})
                source = NumberedVideoTrack(64, 64, fps=30)
                whip = await WhipClient.connect(http, whip_url % ("hooked", query), source, codec="H264")
                try:
                    stream = live.get("hooked")
                    assert stream is not None
                    assert (stream.stream_id, stream.params) == ("hook-id", {"width": 80})
                finally:
                    await whip.close()
    finally:
        await stop_runner(hook_runner)


async def test_an_rtmp_publish_query_sets_the_stream(tmp_path: Path) -> None:
    """`rtmp://gateway/live/KEY?pipeline=…&params=…&streamId=…`, as MediaMTX hands go-livepeer
    the query of a publish: the stream runs with them; bad params refuse the publish."""
    async with runner_procs(tmp_path, 1) as runners:
        config = gateway_config(runners, free_port(), rtmp_port=0)
        async with serving(config) as (_gw, app):
            rtmp = app[LIVE_MEDIA_KEY].rtmp
            assert rtmp is not None
            base = f"rtmp://127.0.0.1:{rtmp.port}/live"
            refused = await asyncio.create_subprocess_exec(
                *obs_publish(f"{base}/bad?params=%7Bnot-json", 2), stderr=asyncio.subprocess.PIPE
            )
            _, err = await asyncio.wait_for(refused.communicate(), 30)
            assert refused.returncode != 0 and b"Invalid pipeline params" in err, err.decode()  # ffmpeg says why
            assert app[LIVE_KEY].get("bad") is None
            query = urlencode({"pipeline": "noop", "params": json.dumps({"width": 96}), "streamId": "sid-9"})
            publisher = await asyncio.create_subprocess_exec(
                *obs_publish(f"{base}/cam?{query}", 6), stderr=asyncio.subprocess.PIPE
            )
            try:
                stream = await first_output(app, "cam", "RTMP")
                assert (stream.stream_id, stream.model_id, stream.params) == ("sid-9", "noop", {"width": 96})
            finally:
                if publisher.returncode is None:
                    publisher.kill()
                await asyncio.wait_for(publisher.wait(), 10)
