"""The streaming limits (`--limit NAME=VALUE`, `StreamLimits`): each over-limit request is refused
with a clear error naming the limit, over real HTTP, RTMP and WebRTC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtmp_helpers import EngineFactory, RawPublisher

from livestream.api.errors import error_middleware
from livestream.app import build_app
from livestream.errors import ConfigError
from livestream.keys import SETTINGS_KEY
from livestream.rtmp.chunks import MSG_SET_CHUNK_SIZE, ProtocolError
from livestream.rtmp.flv import avc_tag
from livestream.settings import Settings, StreamLimits, parse_limits, parse_stream_limits
from livestream.webrtc import PacketFanout, Playback, StreamNotFound, WebRTCHub
from livestream.webrtc.aiortc_patches import install_host_addresses
from livestream.webrtc.client import WebRTCClientError, WhepClient
from livestream.webrtc.ice import IceConfig
from livestream.webrtc.routes import WEBRTC_HUB_KEY, add_webrtc_routes
from livestream.webrtc.testsrc import SharedH264Source

from reliability_helpers import fuzz_examples, load_module


def test_limit_names_parse_into_both_kinds() -> None:
    items = ["trickle_channels=7", "rtmp-message-bytes=5000", "api_rate=0", "pixels=1000"]
    stream, work = parse_stream_limits(items), parse_limits(items)
    assert (stream.trickle_channels, stream.rtmp_message_bytes, stream.api_rate) == (7, 5000, 0)
    assert work.pixels == 1000 and stream.sdp_bytes == StreamLimits().sdp_bytes
    with pytest.raises(ConfigError, match="whep_viewers must be > 0"):
        parse_stream_limits(["whep_viewers=0"])
    with pytest.raises(ConfigError, match="NAME one of .*sdp_bytes"):
        parse_stream_limits(["nope=1"])


@pytest.fixture
async def engine() -> AsyncIterator[TestClient[Any, Any]]:
    limits = StreamLimits(trickle_channels=2, trickle_segment_bytes=1000, api_rate=5)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(Settings(host="127.0.0.1", port=0, trickle_autocreate=True, stream_limits=limits))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_trickle_channels_and_segment_bytes(engine: TestClient[Any, Any]) -> None:
    auth = {"Authorization": "Bearer trickle-test"}  # a bucket of its own (api_rate is 5/min)
    statuses = []
    for i in range(3):
        resp = await engine.post(f"/ai/trickle/ch{i}", headers=auth | {"Authorization": f"Bearer k{i}"})
        statuses.append((resp.status, await resp.text()))
    assert [s for s, _ in statuses] == [200, 200, 503] and "Too many streams" in statuses[2][1]
    resp = await engine.post("/ai/trickle/ch0/0", data=b"x" * 3000, headers={"Authorization": "Bearer big"})
    assert resp.status == 413 and "exceeds 1000 bytes" in await resp.text()


async def test_request_rate_per_api_key(engine: TestClient[Any, Any]) -> None:
    for _ in range(5):
        assert (await engine.get("/live", headers={"Authorization": "Bearer one"})).status != 429
    resp = await engine.get("/live", headers={"Authorization": "Bearer one"})
    body = await resp.json()
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "5 per minute" in body["detail"]["msg"] and "api_rate" in body["detail"]["msg"]
    assert (await engine.get("/live", headers={"Authorization": "Bearer two"})).status != 429  # another key
    assert (await engine.get("/health")).status == 200  # probes are not counted


async def test_rtmp_message_length_and_chunk_size(rtmp_engine_factory: EngineFactory) -> None:
    limits = StreamLimits(rtmp_message_bytes=10_000, rtmp_chunk_size=8192)
    client, server = await rtmp_engine_factory(stream_limits=limits)
    base = f"rtmp://127.0.0.1:{server.port}/live"
    # A message longer than rtmp_message_bytes: the publisher is disconnected, its stream ends.
    pub = RawPublisher(f"{base}/big")
    await pub.publish()
    pub.send("video", 0, avc_tag(True, 1, 0, bytes(20_000)))
    assert await pub.closed_by_server()
    await pub.close()
    # A Set Chunk Size over rtmp_chunk_size: disconnected too.
    pub = RawPublisher(f"{base}/chunky")
    await pub.publish()
    assert pub.proto is not None and pub.writer is not None
    pub.proto._send(2, MSG_SET_CHUNK_SIZE, 0, 0, (1 << 20).to_bytes(4, "big"))
    pub.writer.write(pub.proto.data_to_send())
    assert await pub.closed_by_server()
    await pub.close()
    assert server.protocol_errors == 2
    for stream, words in (("big", "over the 10000-byte limit"), ("chunky", "out of range (1 to 8192)")):
        async with asyncio.timeout(20):
            while True:
                resp = await client.get(f"/live/{stream}/status")
                status = await resp.json()
                if status.get("state") in ("ERROR", "OFFLINE"):
                    break
                await asyncio.sleep(0.1)
        assert words in (status.get("error") or ""), status


# --- WebRTC: SDP size, generated offers over HTTP, viewers per stream ----------------------------


_netns = load_module("reliability_netns", "webrtc/netns.py")
LOOPBACK = IceConfig(hosts=("127.0.0.1",))


@pytest.fixture
def loopback() -> Iterator[None]:
    reason = _netns.namespace_unavailable()
    if reason is not None:
        pytest.skip(f"WebRTC tests need a loopback-only network namespace: {reason}")
    with _netns.loopback_namespace():
        install_host_addresses(LOOPBACK.local_hosts)
        try:
            yield
        finally:
            install_host_addresses([])


class _Streams:
    def __init__(self) -> None:
        self.playbacks: dict[str, Playback] = {}

    async def playback(self, stream: str) -> Playback:
        if stream not in self.playbacks:
            raise StreamNotFound(f"No live stream {stream!r}.")
        return self.playbacks[stream]

    async def publish(self, stream: str) -> Any:
        raise StreamNotFound(stream)


@pytest.fixture
async def whep(loopback: None) -> AsyncIterator[tuple[str, _Streams]]:
    streams = _Streams()
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS_KEY] = Settings(stream_limits=StreamLimits(sdp_bytes=8000, whep_viewers=1))
    hub = WebRTCHub(streams, LOOPBACK)
    app[WEBRTC_HUB_KEY] = hub
    add_webrtc_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")), streams
    finally:
        await hub.close()
        await server.close()


OFFER_HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


async def test_generated_sdp_offers_get_4xx_and_oversized_ones_413(whep: tuple[str, _Streams]) -> None:
    base, _ = whep
    offers: list[str] = []

    @settings(max_examples=fuzz_examples(60), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(st.text(max_size=300), st.text(max_size=300).map(lambda t: OFFER_HEAD + t), st.integers(8001, 100_000).map(lambda n: OFFER_HEAD + "a=x:" + "y" * n)))
    def gather(offer: str) -> None:
        offers.append(offer)

    gather()
    async with aiohttp.ClientSession() as http:
        for offer in offers:
            for kind in ("whep", "whip"):
                async with http.post(f"{base}/live/s1/{kind}", data=offer.encode(), headers={"Content-Type": "application/sdp"}) as resp:
                    body = await resp.json()
                    assert 400 <= resp.status < 500, (resp.status, body, offer[:80])
                    if len(offer.encode()) > 8000:
                        assert resp.status == 413 and "sdp_bytes" in body["detail"]["msg"]


async def test_whep_viewers_per_stream(whep: tuple[str, _Streams]) -> None:
    base, streams = whep
    fanout = PacketFanout(loop=asyncio.get_running_loop())
    source = SharedH264Source(fanout, width=64, height=64)
    streams.playbacks["s1"] = Playback(fanout)
    source.start()
    try:
        async with aiohttp.ClientSession() as http:
            first = await WhepClient.connect(http, f"{base}/live/s1/whep", codec="H264")
            try:
                with pytest.raises(WebRTCClientError) as err:
                    await WhepClient.connect(http, f"{base}/live/s1/whep", codec="H264")
                assert err.value.status == 503 and "whep_viewers" in str(err.value)
            finally:
                await first.close()
    finally:
        source.stop()


async def test_live_sessions_per_client(orchestrator: str) -> None:
    settings = Settings(host="127.0.0.1", port=0, max_live_sessions=4, stream_limits=StreamLimits(sessions_per_client=1))
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(settings)))
    await client.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for name in ("a", "b", "c"):
                async with http.post(f"{orchestrator}{name}") as resp:  # inputs that wait for segments
                    assert resp.status == 200

        async def start(name: str) -> tuple[int, str]:
            resp = await client.post("/live-video-to-video", json={
                "subscribe_url": f"{orchestrator}{name}", "publish_url": f"{orchestrator}{name}-out",
                "model_id": "noop", "stream_id": name,
            })  # fmt: skip
            return resp.status, await resp.text()

        assert (await start("a"))[0] == 200
        status, text = await start("b")
        assert status == 503 and "sessions_per_client" in text
        assert (await client.delete("/live/a")).status == 200
        async with asyncio.timeout(20):
            while (await start("c"))[0] != 200:  # once `a` has ended, the client may start another
                await asyncio.sleep(0.1)
        await client.delete("/live/c")
    finally:
        await client.close()


async def test_rtmp_publishes_per_client(rtmp_engine_factory: EngineFactory) -> None:
    client, server = await rtmp_engine_factory(stream_limits=StreamLimits(sessions_per_client=1), max_live_sessions=4)
    base = f"rtmp://127.0.0.1:{server.port}/live"
    first = RawPublisher(f"{base}/a")
    await first.publish()
    second = RawPublisher(f"{base}/b")
    with pytest.raises(ProtocolError, match="Rejected.*sessions_per_client"):
        await second.publish()
    await second.close()
    await first.close()  # `a` ends: this address may publish again
    async with asyncio.timeout(20):
        while True:
            third = RawPublisher(f"{base}/c")
            try:
                await third.publish()
                break
            except ProtocolError:
                await third.close()
                await asyncio.sleep(0.1)
    await third.close()


async def test_gateway_request_rate_per_api_key() -> None:
    from livestream.gateway.app import build_gateway_app
    from livestream.gateway.config import GatewayConfig

    app = build_gateway_app(GatewayConfig(host="127.0.0.1", port=0, api_keys=("key-one", "key-two"), api_rate=2))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        one, two = ({"Authorization": f"Bearer {k}"} for k in ("key-one", "key-two"))
        assert [(await client.get("/openapi.json", headers=one)).status for _ in range(2)] == [200, 200]
        resp = await client.get("/openapi.json", headers=one)
        assert resp.status == 429 and "2 per minute" in (await resp.json())["detail"]["msg"]
        assert (await client.get("/openapi.json", headers=two)).status == 200  # a bucket per key
        assert (await client.post("/text-to-image", headers={"Authorization": "Bearer nope"}, json={})).status == 401
    finally:
        await client.close()
