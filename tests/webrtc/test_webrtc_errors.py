"""Bad input and auth against the engine: clear errors, other streams unaffected; sans-IO
helpers (ICE servers, host rewriting, trickle fragments); HTTPS for the camera page."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from tls_certs import self_signed_cert

from livestream.app import build_app
from livestream.errors import ConfigError
from livestream.live import LIVE_CONFIG_KEY, LIVE_MANAGER_KEY, SessionConfig
from livestream.live.testsrc import read_number
from livestream.settings import Settings
from livestream.webrtc.client import WebRTCClientError, WhepClient, WhipClient
from livestream.webrtc.ice import IceConfig, parse_ice_server, rewrite_host_candidates
from livestream.webrtc.sdp import OfferError, add_bitrate_hints, check_offer, parse_sdpfrag
from livestream.webrtc.testsrc import NumberedVideoTrack

CONFIG = SessionConfig(status_interval=0.5, input_timeout=3.0, stop_timeout=2.0, max_queue_lag=5.0)
TOKEN = "s3cret"


async def _start(settings: Settings) -> tuple[TestServer, str, Any]:
    app = build_app(settings)
    app[LIVE_CONFIG_KEY] = CONFIG
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, str(server.make_url("")), app


@pytest.fixture
async def engine() -> AsyncIterator[tuple[str, Any]]:
    settings = Settings(
        host="127.0.0.1",
        live_pipeline="noop",
        webrtc_hosts=("127.0.0.1",),
        auth_token=TOKEN,
        stream_keys={"key-b": "b"},
    )
    server, base, app = await _start(settings)
    try:
        yield base, app
    finally:
        await server.close()


async def _offer(kind: str = "video", direction: str = "sendonly") -> str:
    pc = RTCPeerConnection()
    if kind == "video":
        pc.addTransceiver(NumberedVideoTrack() if direction == "sendonly" else "video", direction=direction)
    else:
        pc.addTransceiver("audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_bad_input_leaves_other_streams_alone(engine) -> None:
    base, app = engine
    manager = app[LIVE_MANAGER_KEY]
    async with aiohttp.ClientSession() as http:
        publisher = await WhipClient.connect(http, f"{base}/live/a/whip", NumberedVideoTrack(), token=TOKEN)
        async with asyncio.timeout(10):
            while manager.get("a") is None or not manager.get("a").frames_out:
                await asyncio.sleep(0.05)
        viewer = await WhepClient.connect(http, f"{base}/live/a/whep")  # playback is public
        first = read_number((await viewer.video.recv()).to_ndarray(format="rgb24"))

        async def post(path: str, body: str, token: str | None = TOKEN, ctype: str = "application/sdp") -> tuple[int, str]:
            headers = {"Content-Type": ctype} | ({"Authorization": f"Bearer {token}"} if token else {})
            async with http.post(f"{base}{path}", data=body, headers=headers) as resp:
                return resp.status, await resp.text()

        audio_only = await _offer("audio")
        assert (await post("/live/b/whip", audio_only))[0] == 400
        status, text = await post("/live/b/whip", "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\nm=video x\r\n")
        assert status == 400 and "SDP" in text, text
        status, text = await post("/live/b/whip", "not sdp at all")
        assert status == 400 and "not an SDP offer" in text
        status, text = await post("/live/b/whip", await _offer("video", "recvonly"))
        assert status == 400 and "must send video" in text
        # Auth: no token, a wrong one, another stream's key.
        video = await _offer()
        assert (await post("/live/b/whip", video, token=None))[0] == 401
        assert (await post("/live/b/whip", video, token="nope"))[0] == 401
        assert (await post("/live/c/whip", video, token="key-b"))[0] == 401
        # A second publisher for a live stream.
        status, text = await post("/live/a/whip", video)
        assert status == 409 and "already" in text
        # WHEP: unknown stream, an offer with no video, a malformed one.
        status, text = await post("/live/nowhere/whep", await _offer("video", "recvonly"), token=None)
        assert status == 404 and "nowhere" in text
        assert (await post("/live/a/whep", await _offer("audio", "recvonly"), token=None))[0] == 400
        assert (await post("/live/a/whep", "v=0\r\ngarbage", token=None))[0] == 400
        # Trickle PATCH on a live resource, and its errors.
        location = viewer.location
        frag = "a=ice-ufrag:zzzz\r\nm=video 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        async with http.patch(location, data=frag, headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as r:
            assert r.status == 422  # another ufrag: an ICE restart, refused
        frag = frag.replace("a=ice-ufrag:zzzz\r\n", "")
        async with http.patch(location, data=frag, headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as r:
            assert r.status == 204
        async with http.patch(location, data=frag, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415
        async with http.patch(
            location, data=frag, headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"x"'}
        ) as r:
            assert r.status == 412
        # Stream b with its own key works; a still plays, in order.
        b = await WhipClient.connect(http, f"{base}/live/b/whip", NumberedVideoTrack(), token="key-b")
        numbers = []
        async with asyncio.timeout(10):
            while len(numbers) < 10:
                numbers.append(read_number((await viewer.video.recv()).to_ndarray(format="rgb24")))
        assert numbers == sorted(numbers) and numbers[0] > first
        await b.close()
        await viewer.close()
        await publisher.close()
        async with asyncio.timeout(10):
            while manager.get("a") is not None or manager.get("b") is not None:
                await asyncio.sleep(0.05)


async def test_protected_playback() -> None:
    settings = Settings(host="127.0.0.1", live_pipeline="noop", auth_token=TOKEN, protect_playback=True)
    server, base, _ = await _start(settings)
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(WebRTCClientError) as err:
                await WhepClient.connect(http, f"{base}/live/x/whep")
            assert err.value.status == 401
            with pytest.raises(WebRTCClientError) as err:
                await WhepClient.connect(http, f"{base}/live/x/whep", token=TOKEN)
            assert err.value.status == 404
    finally:
        await server.close()


def test_sdp_helpers() -> None:
    with pytest.raises(OfferError, match="no video"):
        check_offer("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", publishing=False)
    no_ice = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n"
    with pytest.raises(OfferError, match="no ICE credentials"):  # was an AttributeError (a 500)
        check_offer(no_ice, publishing=True)
    answer = "v=0\r\nm=audio 9 UDP 111\r\na=fmtp:111 minptime=10\r\nm=video 9 UDP 96 97\r\na=fmtp:96 x=1\r\na=fmtp:97 apt=96\r\n"
    hinted = add_bitrate_hints(answer)
    assert "a=fmtp:96 x=1;x-google-start-bitrate=1500" in hinted
    assert "a=fmtp:111 minptime=10\r\n" in hinted and "a=fmtp:97 apt=96\r\n" in hinted
    frag = parse_sdpfrag("a=ice-ufrag:u\r\nm=video 9 RTP/AVP 0\r\na=mid:1\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n")
    assert frag.ice_ufrag == "u" and frag.end_of_candidates
    assert frag.candidates[0].ip == "10.0.0.1" and frag.candidates[0].sdpMid == "1"
    with pytest.raises(OfferError):
        parse_sdpfrag("a=candidate:broken\r\n")
    sdp = "m=video 9 UDP 96\r\na=candidate:abc 1 udp 2130706431 10.0.0.4 40000 typ host\r\na=candidate:def 1 udp 1 1.2.3.4 3478 typ srflx raddr 0.0.0.0 rport 0\r\n"
    rewritten = rewrite_host_candidates(sdp, ("203.0.113.5",))
    assert "a=candidate:abc 1 udp 2130706431 203.0.113.5 40000 typ host" in rewritten
    assert "1.2.3.4 3478 typ srflx" in rewritten
    config = IceConfig(hosts=("127.0.0.1", "203.0.113.5"))
    assert config.local_hosts == ("127.0.0.1",) and config.advertised_hosts == ("203.0.113.5",)
    assert config.rtc_configuration().iceServers == []  # never aiortc's implicit public STUN
    server = parse_ice_server("turn:user:pa%40ss@turn.example.com:3478?transport=udp")
    assert (server.urls, server.username, server.credential) == (
        "turn:turn.example.com:3478?transport=udp",
        "user",
        "pa@ss",
    )
    with pytest.raises(ConfigError):
        parse_ice_server("turn:turn.example.com")
    with pytest.raises(ConfigError):
        parse_ice_server("https://example.com")


async def test_tls_serves_the_camera_page(tmp_path: Path) -> None:
    from livestream.cli import _ssl_context, build_parser, settings_from_args

    cert, key = self_signed_cert(tmp_path)
    args = build_parser({}).parse_args(["serve", "--tls-cert", str(cert), "--tls-key", str(key)])
    settings = settings_from_args(args)
    context = _ssl_context(settings)
    assert context is not None
    with pytest.raises(ConfigError):
        settings_from_args(build_parser({}).parse_args(["serve", "--tls-cert", str(cert)]))
    app = build_app(Settings(host="127.0.0.1", live_pipeline="noop"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=context)
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{server.port}/live/demo/publish", ssl=client_ctx) as resp:
                assert resp.status == 200
                assert "whip(" in await resp.text()
            async with http.get(f"https://127.0.0.1:{server.port}/webrtc/webrtc.js", ssl=client_ctx) as resp:
                assert resp.status == 200 and "trickle-ice-sdpfrag" in await resp.text()
    finally:
        await server.close()
