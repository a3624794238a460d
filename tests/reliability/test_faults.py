"""Fault injection: each fault is handled the documented way and leaves nothing behind.

Every test counts threads, asyncio tasks and open file descriptors before it builds its engine
and after it has closed it (`Snapshot` from tests/live/test_no_leaks.py). Faults covered here:
GPU out of memory inside a live pipeline call, a trickle publisher killed mid-segment, an RTMP
publisher that vanishes without a FIN, an RTMP push target that refuses and one that black-holes,
DNS failure for the publish-auth webhook and for a style image. Covered elsewhere, and counted in
docs/benchmarks.md: a pipeline crash (tests/live/test_live_e2e.py), a pipeline stuck forever and a
client gone mid-start (tests/live/test_no_leaks.py), client disconnect mid-upload and mid-job
(tests/test_job_cancellation_e2e.py), mid-SSE (tests/llm/test_llm_route.py), mid-WHEP and mid-WHIP
(tests/webrtc/test_engine_webrtc.py).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from live_helpers import TEST_CONFIG, Channels, Collected, collect, events_of, publish_segments
from rtmp_helpers import RTMP_TEST_CONFIG, RawPublisher, obs_like_args, run_ffmpeg
from test_no_leaks import Snapshot

from livestream.app import build_app
from livestream.live import LIVE_CONFIG_KEY, LIVE_REGISTRY_KEY, SessionConfig
from livestream.live.testsrc import decode_ts, read_number
from livestream.protocols import RTMP_SERVER_KEY
from livestream.rtmp import RtmpServer
from livestream.rtmp.chunks import ProtocolError
from livestream.settings import Settings
from pipelines.live import LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams, NoopPipeline
from trickle import TricklePublisher, TrickleServerConfig, create_trickle_app

HANG_GUARD = 60.0


class OutOfMemoryPipeline(NoopPipeline):
    """Raises CUDA's out-of-memory error from inside the pipeline call, as a GPU would."""

    name = "oom"
    passthrough = False

    def process(self, frames: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated in the call)")


@asynccontextmanager
async def _orchestrator() -> AsyncIterator[str]:
    """go-livepeer's side: a trickle server (autocreate), inside the test's counting."""
    server = TestServer(create_trickle_app(TrickleServerConfig(autocreate=True), base_path="/ai/trickle/"), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/ai/trickle/"))
    finally:
        await server.close()


@asynccontextmanager
async def _engine(settings: Settings, config: SessionConfig = TEST_CONFIG) -> AsyncIterator[TestClient[Any, Any]]:
    registry = default_live_registry()
    registry.register(LivePipelineSpec("oom", NoopParams, OutOfMemoryPipeline, "raises torch.OutOfMemoryError"))
    app = build_app(settings)
    app[LIVE_CONFIG_KEY] = config
    app[LIVE_REGISTRY_KEY] = registry
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        async with asyncio.timeout(HANG_GUARD):
            await client.close()


async def _open(http: aiohttp.ClientSession, ch: Channels) -> tuple[Collected, Collected, list[asyncio.Task[None]]]:
    for url in (ch.publish_url, ch.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200
    out, events = Collected(), Collected()
    return out, events, [asyncio.create_task(collect(ch.publish_url, http, out)), asyncio.create_task(collect(ch.events_url, http, events))]


def _final(events: Collected) -> dict[str, Any]:
    return [e["event"] for e in events_of(events) if e["event"].get("final")][-1]


async def test_gpu_out_of_memory_in_a_live_pipeline_ends_that_session_only(ts_segments: Any) -> None:
    segments = ts_segments(90, size=64)
    before = Snapshot.take()
    async with _orchestrator() as orchestrator, aiohttp.ClientSession() as http, _engine(Settings(host="127.0.0.1", port=0)) as engine:
        good, bad = Channels(orchestrator, "good"), Channels(orchestrator, "oom")
        good_out, _, good_readers = await _open(http, good)
        _, bad_events, bad_readers = await _open(http, bad)
        async with (
            TricklePublisher(good.subscribe_url, "video/mp2t", session=http) as gp,
            TricklePublisher(bad.subscribe_url, "video/mp2t", session=http) as bp,
        ):
            for ch, model in ((good, "noop"), (bad, "oom")):
                resp = await engine.post("/live-video-to-video", json=ch.start_body(model_id=model, stream_id=ch.mid))
                assert resp.status == 200
            await asyncio.gather(publish_segments(gp, segments, gap=0.3), publish_segments(bp, segments[:2], gap=0.3))
        async with asyncio.timeout(HANG_GUARD):
            await asyncio.gather(*good_readers, *bad_readers)
        final = _final(bad_events)
        assert final["state"] == "ERROR" and "out of memory" in final["error"].lower(), final
        frames, _, _ = decode_ts(good_out.data)
        assert [read_number(f) for f in frames] == list(range(90))
    before.assert_nothing_leaked()


async def test_a_trickle_publisher_killed_mid_segment_ends_the_session_as_stalled(ts_segments: Any) -> None:
    segment = ts_segments(90, size=64)[0]
    before = Snapshot.take()
    async with _orchestrator() as orchestrator, aiohttp.ClientSession() as http, _engine(Settings(host="127.0.0.1", port=0)) as engine:
        ch = Channels(orchestrator, "killed")
        _, events, readers = await _open(http, ch)
        resp = await engine.post("/live-video-to-video", json=ch.start_body(model_id="noop", stream_id="killed"))
        assert resp.status == 200
        url = aiohttp.client.URL(ch.subscribe_url)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(
            f"POST {url.path}/0 HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp2t\r\nContent-Length: {len(segment)}\r\n\r\n".encode()
            + segment[: len(segment) // 2]
        )
        await writer.drain()
        # Killed: no FIN, a reset (SO_LINGER 0), half the segment sent.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        async with asyncio.timeout(HANG_GUARD):
            await asyncio.gather(*readers)
        final = _final(events)
        assert final["state"] == "ERROR" and final["end_reason"] == "input stalled", final
    before.assert_nothing_leaked()


@asynccontextmanager
async def _rtmp_engine(**settings: Any) -> AsyncIterator[tuple[TestClient[Any, Any], RtmpServer]]:
    base: dict[str, Any] = {"host": "127.0.0.1", "rtmp_port": 0, "live_pipeline": "noop", "rtmp_idle_timeout": 1.5}
    async with _engine(Settings(**(base | settings)), RTMP_TEST_CONFIG) as client:
        yield client, client.app[RTMP_SERVER_KEY]


async def _ended(client: TestClient[Any, Any], stream: str) -> dict[str, Any]:
    async with asyncio.timeout(HANG_GUARD):
        while True:
            resp = await client.get(f"/live/{stream}/status")
            if resp.status == 200:
                status = await resp.json()
                if status["state"] in ("OFFLINE", "ERROR"):
                    return status
            await asyncio.sleep(0.1)


async def test_an_rtmp_publisher_vanishing_without_fin_is_cut_off_as_stalled() -> None:
    before = Snapshot.take()
    async with _rtmp_engine() as (client, server):
        pub = RawPublisher(f"rtmp://127.0.0.1:{server.port}/live/gone")
        await pub.publish()
        # The publisher's machine is gone: no more bytes, no FIN, no RST; the socket stays open.
        status = await _ended(client, "gone")
        assert status["end_reason"] == "input stalled" and "sent nothing for 1.5 s" in status["error"]
        assert await pub.closed_by_server()
        await pub.close()
    before.assert_nothing_leaked()


@pytest.mark.parametrize("target", ["refusing", "black-hole"])
async def test_an_rtmp_push_target_that_refuses_or_black_holes_never_stalls_the_stream(target: str, numbered_source: Any) -> None:
    source = numbered_source(60)
    before = Snapshot.take()
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts, reads nothing, answers nothing

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    hole_port = hole.sockets[0].getsockname()[1]
    if target == "refusing":
        hole.close()
        await hole.wait_closed()  # nothing listens on the port any more: connection refused
    try:
        async with _rtmp_engine(rtmp_output=f"rtmp://127.0.0.1:{hole_port}/live/{{stream}}") as (client, server):
            rc, err = await run_ffmpeg(obs_like_args(source, f"rtmp://127.0.0.1:{server.port}/live/pushed", realtime=False))
            assert rc == 0, err
            status = await _ended(client, "pushed")
            assert status["error"] is None and status["frames_out"] == 60, status
    finally:
        for writer in accepted:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        hole.close()
        await hole.wait_closed()
    before.assert_nothing_leaked()


async def test_dns_failure_of_the_auth_webhook_refuses_the_publish() -> None:
    before = Snapshot.take()
    async with _rtmp_engine(auth_webhook_url="http://no-such-host.invalid/auth") as (client, server):
        pub = RawPublisher(f"rtmp://127.0.0.1:{server.port}/live/cam")
        with pytest.raises(ProtocolError, match="Unauthorized.*auth webhook unreachable"):
            await pub.publish()
        await pub.close()
        assert server.rejected == 1
    before.assert_nothing_leaked()


def test_dns_failure_of_a_style_image_is_a_clear_error() -> None:
    from pipelines.live.streamdiffusion_features import fetch_style_image

    with pytest.raises(ValueError, match="Failed to fetch image from URL: .*does not resolve"):
        fetch_style_image("http://no-such-host.invalid/style.png")
