"""Trickle over real HTTP, fuzzed: seq values, headers, channel names, bodies cut mid-stream, and
more channels than the server holds. Every generated request gets an answer below 500 (or, for a
body cut by its own client, no answer it could read), and a well-behaved channel on the same
server keeps carrying segments throughout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trickle import TrickleServerConfig, create_trickle_app
from reliability_helpers import fuzz_examples

SETTINGS = settings(max_examples=fuzz_examples(120), deadline=None, suppress_health_check=list(HealthCheck), database=None)


@dataclass(frozen=True)
class Req:
    method: str
    channel: str
    seq: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


seqs = st.one_of(
    st.sampled_from(["-1", "-2", "-3", "0", "1", "4", "5", "99999999999999999999999", "+3", "next", "", "1e3", "0x10", "٣"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=12),
)
headers = st.lists(
    st.tuples(
        st.sampled_from(["Lp-Trickle-Seq", "Lp-Trickle-Reset", "Expect-Content", "Content-Type", "Lp-Trickle-Closed", "X-Any"]),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    ),
    max_size=3,
).map(tuple)
requests = st.builds(
    Req,
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD"]),
    channel=st.one_of(st.sampled_from(["fuzz", "good", "_changes", "a" * 300]), st.text(min_size=1, max_size=20)),
    seq=seqs,
    headers=headers,
    body=st.binary(max_size=2000),
)


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    config = TrickleServerConfig(autocreate=True, max_streams=50, max_segment_bytes=4096, keepalive_interval=0.5)
    server = TestServer(create_trickle_app(config, base_path="/t/"), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def _good_round(http: aiohttp.ClientSession, base: str, n: int) -> None:
    """One segment through the well-behaved channel `good` (POST, then GET it back whole)."""
    async with asyncio.timeout(10):
        async with http.post(f"{base}good/{n}", data=b"segment %d" % n, headers={"Content-Type": "video/mp2t"}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(f"{base}good/{n}") as resp:
            assert resp.status == 200 and await resp.read() == b"segment %d" % n


async def test_generated_requests_get_answers_below_500(server: TestServer) -> None:
    cases: list[Req] = []

    @SETTINGS
    @given(requests)
    def gather(req: Req) -> None:
        cases.append(req)

    gather()
    base = str(server.make_url("/t/"))
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as http:
        await _good_round(http, base, 0)
        for i, req in enumerate(cases):
            url = f"{base}{quote(req.channel, safe='')}/{quote(req.seq, safe='')}" if req.seq else f"{base}{quote(req.channel, safe='')}"
            try:
                async with asyncio.timeout(2 if req.method == "GET" else 20):
                    async with http.request(req.method, url, headers=dict(req.headers), data=req.body or None) as resp:
                        body = await resp.read()
                        text = body.decode("utf-8", "replace")
            except TimeoutError:
                # A GET of a seq not written yet is a long poll (answered when its segment
                # starts); its client gives up here and the server notices the disconnect.
                assert req.method == "GET", req
                statuses[0] = statuses.get(0, 0) + 1
                continue
            # 503 only as the channel limit's refusal (autocreate made max_streams channels).
            assert resp.status < 500 or (resp.status == 503 and "Too many streams" in text), (req, resp.status, text)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if i % 20 == 0:
                await _good_round(http, base, i)
        await _good_round(http, base, len(cases))
    assert statuses  # the counts per status show in a failure's locals


async def test_bodies_cut_mid_stream_leave_the_server_serving(server: TestServer) -> None:
    cases: list[tuple[bytes, int, bool]] = []

    @SETTINGS
    @given(body=st.binary(min_size=1, max_size=3000), extra=st.integers(1, 100_000), chunked=st.booleans())
    def gather(body: bytes, extra: int, chunked: bool) -> None:
        cases.append((body, extra, chunked))

    gather()
    base = str(server.make_url("/t/"))
    host, port = server.host, server.port
    assert port is not None
    async with aiohttp.ClientSession() as http:
        for i, (body, extra, chunked) in enumerate(cases[:40]):
            reader, writer = await asyncio.open_connection(host, port)
            if chunked:  # a chunk promising more than is sent, then the connection drops
                head = b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body) + extra:x}\r\n".encode()
            else:
                head = f"Content-Length: {len(body) + extra}\r\n\r\n".encode()
            writer.write(f"POST /t/cut{i % 5}/-1 HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp2t\r\n".encode() + head + body)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            if i % 10 == 0:
                await _good_round(http, base, i)
        await _good_round(http, base, len(cases))


async def test_more_channels_than_the_server_holds_are_refused_with_503(server: TestServer) -> None:
    base = str(server.make_url("/t/"))
    async with aiohttp.ClientSession() as http:
        statuses = []
        for i in range(60):  # max_streams is 50 here (1000 by default; the soak makes thousands)
            async with http.post(f"{base}many{i}") as resp:
                statuses.append(resp.status)
                if resp.status != 200:
                    assert resp.status == 503 and "Too many streams" in await resp.text()  # go-livepeer's words
        assert statuses.count(200) == 50 and statuses.count(503) == 10
        for i in range(50):
            async with http.delete(f"{base}many{i}") as resp:
                assert resp.status == 200
        await _good_round(http, base, 0)
