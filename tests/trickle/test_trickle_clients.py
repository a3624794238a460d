"""Our publisher and subscriber against our server (and against a pre-#3990 style server, §9)."""

from __future__ import annotations

import asyncio
import os
import ssl
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from trickle_helpers import MakeServer, Served, get, post, request, wait_until

from trickle import (
    TRICKLE_SERVER_KEY,
    TrickleClientError,
    TricklePublishError,
    TricklePublisher,
    TrickleRetriesExhaustedError,
    TrickleSegment,
    TrickleServer,
    TrickleServerConfig,
    TrickleStreamGoneError,
    TrickleStreamNotFoundError,
    TrickleSubscriber,
)
from trickle.channel import Channel


async def collect(subscriber: TrickleSubscriber) -> list[tuple[int, bytes]]:
    return [(segment.seq, await segment.read()) async for segment in subscriber]


async def test_concurrent_subscribers_get_identical_bytes(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "video/MP2T")
    payloads = [[os.urandom(n) for n in (1, 1000, 65536, 7)] for _ in range(6)]
    subscribers = [TrickleSubscriber(served.url(), start_seq=0, session=http) for _ in range(4)]
    for subscriber in subscribers:
        await subscriber.start()
    tasks = [asyncio.create_task(collect(s)) for s in subscribers]
    async with TricklePublisher(served.url(), "video/MP2T", session=http) as publisher:
        for chunks in payloads:
            async with publisher.segment() as segment:
                for chunk in chunks:
                    await segment.write(chunk)
    expected = [(i, b"".join(chunks)) for i, chunks in enumerate(payloads)]
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for subscriber in subscribers:
        await subscriber.close()
    assert all(result == expected for result in results)


async def test_subscriber_sees_bytes_before_the_segment_ends(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "video/MP2T")
    first_seen = asyncio.Event()
    async with TrickleSubscriber(served.url(), session=http) as subscriber:

        async def read_one() -> bytes:
            segment = await subscriber.next_segment()
            assert segment is not None
            chunks = []
            async for chunk in segment:
                chunks.append(chunk)
                first_seen.set()
            return b"".join(chunks)

        reader = asyncio.create_task(read_one())
        async with TricklePublisher(served.url(), "video/MP2T", session=http) as publisher:
            async with publisher.segment() as segment:
                await segment.write(b"head")
                await asyncio.wait_for(first_seen.wait(), 5)  # the segment is still open here
                await segment.write(b"tail")
            assert await asyncio.wait_for(reader, 5) == b"headtail"


async def test_too_old_seq_resyncs_to_the_live_edge(served: Served, http: aiohttp.ClientSession) -> None:
    async with TricklePublisher(served.url(), "text/plain", session=http) as publisher:
        for i in range(10):
            async with publisher.segment() as segment:
                await segment.write(f"s{i}".encode())
        async with TrickleSubscriber(served.url(), start_seq=0, session=http) as subscriber:
            reader = asyncio.create_task(subscriber.next_segment())
            await wait_until(lambda: subscriber.next_seq == 10)
            async with publisher.segment() as segment:
                await segment.write(b"live")
            got = await asyncio.wait_for(reader, 5)
            assert got is not None
            assert (got.seq, await got.read(), subscriber.skipped) == (10, b"live", 10)


async def test_future_seq_waits_then_falls_back_to_the_edge(served: Served, http: aiohttp.ClientSession) -> None:
    async with TricklePublisher(served.url(), "text/plain", session=http) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"zero")
        async with TrickleSubscriber(
            served.url(), start_seq=50, session=http, ahead_delay=0.01, max_retries=3
        ) as subscriber:
            reader = asyncio.create_task(subscriber.next_segment())
            await wait_until(lambda: subscriber.next_seq == 1)  # gave up waiting at 50
            async with publisher.segment() as segment:
                await segment.write(b"one")
            got = await asyncio.wait_for(reader, 5)
            assert got is not None and (got.seq, await got.read()) == (1, b"one")


async def test_publisher_close_ends_subscribers_cleanly(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "text/plain")
    async with TrickleSubscriber(served.url(), start_seq=0, session=http) as subscriber:
        reader = asyncio.create_task(collect(subscriber))
        publisher = TricklePublisher(served.url(), "text/plain", session=http)
        async with publisher:
            async with publisher.segment() as segment:
                await segment.write(b"only")
        assert await asyncio.wait_for(reader, 5) == [(0, b"only")]
    assert "ch" not in served.trickle.channels
    with pytest.raises(TrickleStreamNotFoundError):
        async with TrickleSubscriber(served.url(), session=http) as late:
            await late.next_segment()


async def test_publisher_errors_when_the_stream_is_gone(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    served = await make_server()
    async with TricklePublisher(served.url(), "text/plain", session=http) as publisher:
        with pytest.raises(TrickleStreamNotFoundError):
            async with publisher.segment() as segment:
                await segment.write(b"x")
        with pytest.raises(TrickleStreamNotFoundError):  # sticky
            async with publisher.segment():
                pass

    served.trickle.create_channel("ch", "text/plain")
    async with TricklePublisher(served.url(), "text/plain", session=http) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"x")
        served.trickle.close_channel("ch")
        with pytest.raises(TrickleStreamGoneError):
            async with publisher.segment() as segment:
                await segment.write(b"y")


async def test_preconnect_closed_by_the_server_drops_only_that_segment(
    served: Served, http: aiohttp.ClientSession
) -> None:
    async with TricklePublisher(served.url(), "text/plain", session=http) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"zero")
        channel = served.trickle.get_channel("ch")
        assert channel is not None
        await wait_until(lambda: channel.segment_at(1) is not None)
        await request(http, "DELETE", served.url() + "/1")  # the preconnected POST ends empty
        assert publisher._pending is not None
        await wait_until(publisher._pending.task.done)
        with pytest.raises(TricklePublishError, match="segment 1"):
            async with publisher.segment() as segment:
                await segment.write(b"one")
        async with publisher.segment() as segment:
            await segment.write(b"two")
        assert (await get(http, served.url() + "/2")).body == b"two"


async def test_publisher_retries_once_after_a_connection_failure(
    served: Served, http: aiohttp.ClientSession
) -> None:
    async with TricklePublisher(served.url(), "text/plain", session=http) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"zero")
        pending = publisher._pending
        assert pending is not None
        channel = served.trickle.get_channel("ch")
        assert channel is not None
        await wait_until(lambda: channel.segment_at(1) is not None)  # the preconnect reached the server
        await pending.cancel()  # as if the preconnect's connection had dropped
        async with publisher.segment() as segment:
            await segment.write(b"one")
        # Depending on how the drop reached the server, seq 1 ended empty (an EOF: the retry
        # lands on seq 2) or stayed open (a reset: the retry fills seq 1). Asking for -1 covers both.
        stored = segment.seq
        assert stored in (1, 2)
        assert (await get(http, f"{served.url()}/{stored}")).body == b"one"
        async with publisher.segment() as segment:
            await segment.write(b"two")
        assert segment.seq == stored + 1


async def test_publisher_start_at_next_with_reset(served: Served, http: aiohttp.ClientSession) -> None:
    await post(http, served.url() + "/0", b"a")
    await post(http, served.url() + "/1", b"b")
    async with TricklePublisher(served.url(), "text/plain", session=http, start_seq=-1) as publisher:
        async with publisher.segment() as segment:
            assert segment.seq == 2
            await segment.write(b"c")
        assert (await get(http, served.url() + "/2")).body == b"c"


async def test_killed_publisher_mid_segment(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "video/MP2T")
    async with TrickleSubscriber(served.url(), start_seq=0, session=http) as subscriber:
        reader = asyncio.create_task(subscriber.next_segment())
        _, writer = await asyncio.open_connection(served.server.host, served.server.port)
        writer.write(b"POST /ch/0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n")
        await writer.drain()
        segment = await asyncio.wait_for(reader, 5)
        assert segment is not None
        assert await segment.__anext__() == b"partial"
        writer.transport.abort()  # the publisher dies mid-segment
        rest = asyncio.create_task(segment.read())
        await asyncio.sleep(0.1)
        assert not rest.done()  # as in go-livepeer, the segment stays open...
        async with TricklePublisher(served.url(), "video/MP2T", session=http, start_seq=-1) as restarted:
            async with restarted.segment() as new:  # ...until a restarted publisher resets it
                await new.write(b"fresh")
            assert await asyncio.wait_for(rest, 5) == b""
            following = await asyncio.wait_for(subscriber.next_segment(), 5)
            assert following is not None
            assert (following.seq, await following.read()) == (1, b"fresh")


async def test_stalled_subscriber_does_not_block_others(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "video/MP2T")
    _, stalled = await asyncio.open_connection(served.server.host, served.server.port)
    stalled.transport.set_write_buffer_limits(0)
    stalled.write(b"GET /ch/0 HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    await stalled.drain()
    await wait_until(lambda: served.trickle.get_channel("ch").segment_at(0) is not None)  # type: ignore[union-attr]
    chunk = os.urandom(256 * 1024)
    async with TrickleSubscriber(served.url(), start_seq=0, session=http) as subscriber:
        reader = asyncio.create_task(collect(subscriber))
        async with asyncio.timeout(20):
            async with TricklePublisher(served.url(), "video/MP2T", session=http) as publisher:
                for _ in range(3):
                    async with publisher.segment() as segment:
                        for _ in range(16):  # 4 MiB per segment, far beyond socket buffers
                            await segment.write(chunk)
            results = await reader
    assert [seq for seq, _ in results] == [0, 1, 2]
    assert all(data == chunk * 16 for _, data in results)
    stalled.transport.abort()


async def test_cancelling_a_pending_read_unblocks(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "text/plain")
    async with TrickleSubscriber(served.url(), session=http) as subscriber:
        pending = asyncio.create_task(subscriber.next_segment())
        await asyncio.sleep(0.05)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending


async def test_subscriber_retries_are_bounded(http: aiohttp.ClientSession, aiohttp_server: object) -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ch/{seq}", failing)
    server = await aiohttp_server(app)  # type: ignore[operator]
    url = str(server.make_url("/ch"))
    async with TrickleSubscriber(url, session=http, max_retries=2, retry_delay=0.01) as subscriber:
        with pytest.raises(TrickleRetriesExhaustedError):
            await subscriber.next_segment()


async def test_tolerates_pre_3990_servers(http: aiohttp.ClientSession, aiohttp_server: object) -> None:
    """§9: empty segments answered 470+Latest, POSTs without Lp-Trickle-Seq, no /next, any Closed value."""
    posted: list[str] = []

    async def get_segment(request: web.Request) -> web.StreamResponse:
        seq = request.match_info["seq"]
        if seq == "next":
            return web.Response(status=400, text="Invalid idx\n")
        if seq == "0":  # an empty segment, the old way
            return web.Response(status=470, headers={"Lp-Trickle-Latest": "1"}, text="Entry not found")
        if seq == "1":
            return web.Response(body=b"one", headers={"Lp-Trickle-Seq": "1"})
        return web.Response(headers={"Lp-Trickle-Closed": "yes"})

    async def post_segment(request: web.Request) -> web.Response:
        posted.append(f"{request.match_info['seq']}:{(await request.read()).decode()}")
        return web.Response()

    async def delete_channel(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/ch/{seq}", get_segment)
    app.router.add_post("/ch/{seq}", post_segment)
    app.router.add_delete("/ch", delete_channel)
    server = await aiohttp_server(app)  # type: ignore[operator]
    url = str(server.make_url("/ch"))
    async with TrickleSubscriber(url, start_seq=0, session=http) as subscriber:
        assert await collect(subscriber) == [(1, b"one")]
    async with TricklePublisher(url, "text/plain", session=http, start_seq=-1) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"x")
    assert posted[0] == "0:x"


async def test_segment_object_api(served: Served, http: aiohttp.ClientSession) -> None:
    async with TricklePublisher(served.url(), "application/json", session=http) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"{}")
        async with TrickleSubscriber(served.url(), start_seq=-2, session=http) as subscriber:
            got = await subscriber.next_segment()
            assert isinstance(got, TrickleSegment)
            assert (got.seq, got.mime_type, got.latest, await got.read()) == (0, "application/json", 1, b"{}")


async def test_memory_stays_bounded_over_10000_segments(served: Served, http: aiohttp.ClientSession) -> None:
    # 10,000 segments through the handlers' own bookkeeping (fast), then 300 over HTTP.
    channel = Channel("mem", "video/MP2T")
    payload = b"x" * 1000

    def publish_many(start: int, count: int) -> None:
        for seq in range(start, start + count):
            segment = channel.get_for_write(seq)
            channel.mark_written(seq)
            segment.append(payload)
            segment.close()

    publish_many(0, 100)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        publish_many(100, 10_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(list(channel.segments())) == 5
    assert grown < 20_000, grown

    async with TricklePublisher(served.url(), "video/MP2T", session=http) as publisher:
        for _ in range(300):
            async with publisher.segment() as segment:
                await segment.write(payload)
        http_channel = served.trickle.get_channel("ch")
        assert http_channel is not None
        assert len(list(http_channel.segments())) <= 5
        assert sum(s.size for s in http_channel.segments()) <= 5 * len(payload)


async def test_tls_is_verified_by_default(aiohttp_server: Any, tmp_path: Path) -> None:
    """§10.2: certificates are validated by default; a session that skips verification works."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await openssl.wait() == 0
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    TrickleServer(TrickleServerConfig(autocreate=True)).setup(app)
    server = await aiohttp_server(app, ssl=context)
    url = str(server.make_url("/tls"))
    app[TRICKLE_SERVER_KEY].create_channel("tls", "text/plain")
    with pytest.raises(TrickleClientError, match="TLS"):
        async with TrickleSubscriber(url) as subscriber:
            await subscriber.next_segment()
    insecure = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
    async with insecure, TricklePublisher(url, "text/plain", session=insecure) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"secret")
        async with TrickleSubscriber(url, start_seq=0, session=insecure) as subscriber:
            got = await subscriber.next_segment()
            assert got is not None and await got.read() == b"secret"
