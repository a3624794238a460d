"""The URL guard pins the address it checked (DNS rebinding): a client's URL is connected to at the
address the guard approved, never at a second DNS answer.

A fake DNS (`socket.getaddrinfo` patched for one name, `rebind.test`, every other name resolved
as usual) answers differently on each lookup; the servers behind the answers are real loopback
servers (127.0.0.1 and 127.0.0.2 share a port), so the test sees which one a connection reached.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from fractions import Fraction
from typing import Any

import av
import pytest
from aiohttp import web

from livestream.ingest import FrameTarget, Ingest
from livestream.live import SessionConfig, SessionManager
from livestream.live.testsrc import draw_frame
from livestream.protocols import OUTPUT_SINKS
from livestream.rtmp.push import RtmpPushSink
from livestream.settings import Settings
from pipelines.url_guard import UrlPolicy, guarded_fetch

from rtmp_destination import RtmpDestination

NAME = "rebind.test"
HANG_GUARD = 60.0


class FakeDns:
    """`NAME` resolves to `answers` in turn (the last one from then on)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.lookups = 0
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
            if host != NAME:
                return real(host, port, family, type, proto, flags)
            address = self.answers[min(self.lookups, len(self.answers) - 1)]
            self.lookups += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def _pair(make: Callable[[str, int], Any]) -> tuple[Any, Any]:
    """Servers on 127.0.0.1 and 127.0.0.2 with the same port (a few tries: the port may be taken)."""
    for _ in range(5):
        first = await make("127.0.0.1", 0).__aenter__()
        try:
            second = await make("127.0.0.2", first.port).__aenter__()
        except OSError:
            await first.__aexit__(None, None, None)
            continue
        return first, second
    pytest.skip("no free port on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
async def destinations() -> AsyncIterator[tuple[RtmpDestination, RtmpDestination]]:
    checked, other = await _pair(RtmpDestination)
    try:
        yield checked, other
    finally:
        await other.__aexit__(None, None, None)
        await checked.__aexit__(None, None, None)


async def test_a_guarded_push_connects_to_the_address_the_guard_checked(
    monkeypatch: pytest.MonkeyPatch, destinations: tuple[RtmpDestination, RtmpDestination]
) -> None:
    checked, other = destinations
    dns = FakeDns(monkeypatch, ["127.0.0.1", "127.0.0.2"])  # loopback allowed here (tests' policy)
    sink = RtmpPushSink(f"rtmp://{NAME}:{checked.port}/live/out", guarded=True, min_backoff=30.0)
    reports: list[str] = []
    async with asyncio.timeout(HANG_GUARD):
        sink.start(reports.append)
        await checked.published.wait()
        await sink.aclose(0.0)
    assert reports == [] and dns.lookups == 1
    assert other.connections == 0  # no second lookup, no second address
    assert checked.tc_urls == [f"rtmp://{NAME}:{checked.port}/live"]  # the tcUrl keeps the name


class Frames(Ingest):
    """Numbered 64x64 frames at about 30 fps until stopped."""

    name = "frames"

    def __init__(self) -> None:
        self._stop = asyncio.Event()

    async def run(self, target: FrameTarget) -> None:
        n = 0
        while not self._stop.is_set():
            frame = av.VideoFrame.from_ndarray(draw_frame(n, 64, 64), format="rgb24")
            frame.pts, frame.time_base = n * 3000, Fraction(1, 90000)
            target.on_input()
            target.put_video(frame)
            n += 1
            await asyncio.sleep(0.03)

    def stop(self) -> None:
        self._stop.set()

    def abort(self) -> None:
        self._stop.set()


async def test_an_rtmp_output_that_rebinds_to_loopback_is_never_reached(
    monkeypatch: pytest.MonkeyPatch, destinations: tuple[RtmpDestination, RtmpDestination]
) -> None:
    """The live API's `rtmp_output` resolves to a public address when configured, to loopback when
    the push connects: the push is refused (an error on the session), loopback sees nothing."""
    loopback, _ = destinations
    monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "0")  # production's default
    dns = FakeDns(monkeypatch, ["93.184.215.14", "127.0.0.1"])
    config = SessionConfig(status_interval=0.25, input_timeout=5.0, stop_timeout=3.0, max_restarts=1)
    async with SessionManager(Settings(live_pipeline="noop"), config=config, output_sinks=OUTPUT_SINKS) as manager:
        result = await manager.configure("cam", {"rtmp_output": f"rtmp://{NAME}:{loopback.port}/live/key"})
        assert result["rtmp_output"] and dns.lookups == 1  # the check at configure saw a public address
        session = await manager.start_direct("cam", Frames())
        (push,) = [s for s in session.sinks.sinks if isinstance(s, RtmpPushSink)]
        async with asyncio.timeout(HANG_GUARD):
            while push.failures < 1:
                await asyncio.sleep(0.01)
        await manager.stop("cam")
    assert push.last_error is not None and "loopback" in push.last_error and "key" not in push.last_error
    assert loopback.connections == 0


async def test_an_rtmp_output_from_the_operators_webhook_is_not_guarded(
    monkeypatch: pytest.MonkeyPatch, destinations: tuple[RtmpDestination, RtmpDestination]
) -> None:
    """Trusted (the auth webhook's answer): the push connects by name, loopback included."""
    loopback, _ = destinations
    monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "0")
    FakeDns(monkeypatch, ["127.0.0.1"])
    config = SessionConfig(status_interval=0.25, input_timeout=5.0, stop_timeout=3.0, max_restarts=1)
    async with SessionManager(Settings(live_pipeline="noop"), config=config, output_sinks=OUTPUT_SINKS) as manager:
        await manager.configure("cam", {"rtmp_output": f"rtmp://{NAME}:{loopback.port}/live/key"}, trusted=True)
        await manager.start_direct("cam", Frames())
        async with asyncio.timeout(HANG_GUARD):
            await loopback.published.wait()
        await manager.stop("cam")


class Site:
    """A loopback HTTP server on `host` that records each request's Host header."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.host, self.port = host, port
        self.hosts: list[str] = []
        self._runner: web.AppRunner | None = None

    async def _image(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        return web.Response(body=b"from " + self.host.encode(), content_type="image/png")

    async def __aenter__(self) -> Site:
        app = web.Application()
        app.router.add_get("/style.png", self._image)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_a_guarded_fetch_connects_to_the_address_the_guard_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    checked, other = await _pair(Site)
    try:
        dns = FakeDns(monkeypatch, ["127.0.0.1", "127.0.0.2"])
        url = f"http://{NAME}:{checked.port}/style.png"
        fetched = await asyncio.to_thread(guarded_fetch, url, policy=UrlPolicy(allow_private=True))
    finally:
        await other.__aexit__(None, None, None)
        await checked.__aexit__(None, None, None)
    assert fetched.body == b"from 127.0.0.1" and dns.lookups == 1
    assert checked.hosts == [f"{NAME}:{checked.port}"]  # the Host header keeps the name
    assert other.hosts == []


async def test_the_gateways_start_hook_guards_the_publishers_rtmp_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """go-livepeer's `/live/video-to-video/{stream}/start`: `rtmpOutput` in the publisher's query
    goes through the URL guard (the push then pins the checked address, as above)."""
    from aiohttp.test_utils import TestClient, TestServer

    from livestream.gateway.app import build_gateway_app
    from livestream.gateway.config import GatewayConfig

    monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "0")
    FakeDns(monkeypatch, ["127.0.0.1"])
    async with TestClient(TestServer(build_gateway_app(GatewayConfig(host="127.0.0.1", port=0)))) as client:
        for target in (f"rtmp://{NAME}:1935/live/secret-key", "rtmp://169.254.169.254/live/secret-key"):
            form = {"source_id": "s1", "source_type": "rtmpconn", "query": f"rtmpOutput={target}"}
            resp = await client.post("/live/video-to-video/cam/start", data=form)
            text = await resp.text()
            assert resp.status == 400 and "rtmpOutput refused" in text and "loopback" in text, text
            assert "secret-key" not in text
