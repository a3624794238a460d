"""The shared-encode WHEP path against real aiortc peers, without the live engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc.mediastreams import MediaStreamError

from livestream.live.testsrc import read_number
from livestream.webrtc import PacketFanout, Playback, StreamNotFound, WebRTCHub
from livestream.webrtc.client import WebRTCClientError, WhepClient
from livestream.webrtc.routes import WEBRTC_HUB_KEY, add_webrtc_routes
from livestream.webrtc.testsrc import SharedH264Source
from livestream.keys import SETTINGS_KEY
from livestream.settings import Settings
from livestream.api.errors import error_middleware

from .conftest import LOOPBACK


class Streams:
    def __init__(self) -> None:
        self.playbacks: dict[str, Playback] = {}

    async def playback(self, stream: str) -> Playback:
        try:
            return self.playbacks[stream]
        except KeyError:
            raise StreamNotFound(f"No live stream {stream!r}.") from None

    async def publish(self, stream: str):  # pragma: no cover - not used here
        raise StreamNotFound(stream)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Streams, WebRTCHub]]:
    streams = Streams()
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS_KEY] = Settings()
    hub = WebRTCHub(streams, LOOPBACK)
    app[WEBRTC_HUB_KEY] = hub
    add_webrtc_routes(app)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")), streams, hub
    finally:
        await hub.close()
        await srv.close()


async def _numbers(track, count: int, timeout: float = 15.0, source=None) -> list[int]:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            frame = await track.recv()
            out.append(read_number(frame.to_ndarray(format="rgb24")))
            if source is not None:
                # Live: the viewer is within a second of the encoder.
                assert source.encoded - out[-1] < 30, (source.encoded, out)
    return out


async def test_three_viewers_share_one_encode_in_order(server) -> None:
    base, streams, hub = server
    fanout = PacketFanout(loop=asyncio.get_running_loop())
    source = SharedH264Source(fanout, width=128, height=128)
    streams.playbacks["s1"] = Playback(fanout)
    source.start()
    try:
        async with aiohttp.ClientSession() as http:
            viewers = [await WhepClient.connect(http, f"{base}/live/s1/whep", codec="H264") for _ in range(3)]
            assert fanout.viewers == 3
            results = await asyncio.gather(*(_numbers(v.video, 20, source=source) for v in viewers))
            for numbers in results:
                # In order, consecutive (no loss on loopback), and live (joined near the edge).
                assert numbers == sorted(numbers), numbers
                assert numbers[-1] - numbers[0] == len(numbers) - 1, numbers
            assert hub.stream_status("s1")["viewers"] == 3
            assert {r.codec for r in hub.resources("s1")} == {"H264"}
            # One encode for everyone; the joins coalesced into few IDRs.
            assert source.keyframes <= 3 + source.encoded // 60 + 1
            for v in viewers:
                await v.close()
            assert hub.resources("s1") == []
            assert fanout.viewers == 0
    finally:
        source.stop()


async def test_vp8_fallback_and_pli(server) -> None:
    base, streams, hub = server
    fanout = PacketFanout(loop=asyncio.get_running_loop())
    source = SharedH264Source(fanout)
    streams.playbacks["s2"] = Playback(fanout)
    source.start()
    try:
        async with aiohttp.ClientSession() as http:
            viewer = await WhepClient.connect(http, f"{base}/live/s2/whep", codec="VP8")
            numbers = await _numbers(viewer.video, 10)
            assert numbers == sorted(numbers)
            assert [r.codec for r in hub.resources("s2")] == ["VP8"]
            h264 = await WhepClient.connect(http, f"{base}/live/s2/whep", codec="H264")
            await _numbers(h264.video, 3)
            # A PLI from the viewer reaches the shared encoder as an IDR request.
            before = fanout.keyframe_requests
            await asyncio.sleep(0.3)
            sender = hub.resources("s2")[-1].pc.getSenders()[0]
            sender._send_keyframe()
            assert fanout.keyframe_requests == before + 1
            await viewer.close()
            await h264.close()
    finally:
        source.stop()


async def test_bad_offers(server) -> None:
    base, streams, hub = server
    fanout = PacketFanout(loop=asyncio.get_running_loop())
    streams.playbacks["s3"] = Playback(fanout)
    async with aiohttp.ClientSession() as http:
        async def post(stream: str, body: str, ctype: str = "application/sdp") -> tuple[int, str]:
            async with http.post(f"{base}/live/{stream}/whep", data=body, headers={"Content-Type": ctype}) as r:
                return r.status, await r.text()

        status, text = await post("s3", "hello")
        assert status == 400 and "not an SDP offer" in text
        status, text = await post("s3", "v=0\r\nthis is not sdp\r\n")
        assert status == 400, text
        status, text = await post("s3", "v=0", "text/plain")
        assert status == 415
        # An audio-only offer.
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        status, text = await post("s3", pc.localDescription.sdp)
        await pc.close()
        assert status == 400 and "no video" in text
        with pytest.raises(WebRTCClientError) as err:
            await WhepClient.connect(http, f"{base}/live/nope/whep")
        assert err.value.status == 404 and "nope" in str(err.value)
        async with http.delete(f"{base}/live/s3/whep/unknown") as r:
            assert r.status == 404
    assert hub.resources() == []


async def test_late_joiner_gets_a_keyframe_at_once(server) -> None:
    """With a 20 s GOP, a viewer joining mid-GOP plays within a second: its sender's first
    recv() asks the shared encoder for an IDR (aiortc alone would wait for the next one)."""
    base, streams, hub = server
    fanout = PacketFanout(loop=asyncio.get_running_loop())
    source = SharedH264Source(fanout, gop=600)
    streams.playbacks["late"] = Playback(fanout)
    source.start()
    try:
        await asyncio.sleep(1.0)  # well past the stream's first IDR
        async with aiohttp.ClientSession() as http:
            viewer = await WhepClient.connect(http, f"{base}/live/late/whep", codec="H264")
            loop = asyncio.get_running_loop()
            start = loop.time()
            numbers = await _numbers(viewer.video, 3, timeout=5)
            assert loop.time() - start < 3.0
            assert numbers[0] > 15 and numbers == sorted(numbers)
            assert source.keyframes >= 2 and fanout.keyframe_requests >= 1
            await viewer.close()
    finally:
        source.stop()


async def test_a_viewer_that_falls_behind_resyncs_at_an_idr() -> None:
    import av

    requests = []
    fanout = PacketFanout(lambda: requests.append(1), max_queue=5, keyframe_interval=0)
    track = fanout.track()

    def packet(key: bool) -> av.Packet:
        p = av.Packet(b"\x00\x00\x00\x01" + (b"\x65" if key else b"\x41"))
        p.is_keyframe = key
        return p

    fanout.publish(packet(True))  # before the first recv(): not queued (stale at DTLS time)
    recv = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    assert requests == [1]  # the join IDR
    fanout.publish(packet(False))  # dropped: waiting for the IDR
    fanout.publish(packet(True))
    assert (await recv).is_keyframe
    for _ in range(7):  # the viewer stops reading: its queue overflows
        fanout.publish(packet(False))
    assert track.resyncs == 1 and len(requests) == 2
    fanout.publish(packet(False))
    fanout.publish(packet(True))
    first = await track.recv()
    assert first.is_keyframe  # back in at a keyframe, never mid-GOP
    fanout.close()
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert fanout.viewers == 0
