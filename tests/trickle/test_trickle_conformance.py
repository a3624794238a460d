"""TRICKLE.md, point by point, against our server over real HTTP on loopback.

Section numbers refer to /shared/TRICKLE.md. §10 (go-livepeer's own test list) is at the end.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from trickle_helpers import MakeServer, Served, StreamingPost, get, post, request, wait_until

from trickle import TrickleRequestError
from trickle.channel import Channel

H_SEQ = "Lp-Trickle-Seq"
H_LATEST = "Lp-Trickle-Latest"
H_CLOSED = "Lp-Trickle-Closed"


async def publish(http: aiohttp.ClientSession, url: str, data: bytes, **headers: str) -> None:
    reply = await post(http, url, data, headers=headers)
    assert reply.status == 200, reply


# --- §1 URL layout ---------------------------------------------------------------------------


async def test_routes_under_a_base_path(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    served = await make_server(base_path="/ai/trickle", autocreate=True)
    assert served.base.endswith("/ai/trickle/")
    await publish(http, served.url() + "/0", b"abc")
    assert (await get(http, served.url() + "/0")).body == b"abc"
    root = str(served.server.make_url("/ch/0"))
    assert (await get(http, root)).status == 404


async def test_unregistered_method_is_405(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/0", b"x")
    assert (await request(http, "PUT", served.url() + "/0")).status == 405


async def test_next_route_takes_precedence(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/0", b"x")
    reply = await get(http, served.url() + "/next")
    assert (reply.status, reply.body, reply.headers[H_LATEST]) == (200, b"1", "1")


# --- §2 state model --------------------------------------------------------------------------


async def test_ring_keeps_five_segments(served: Served, http: aiohttp.ClientSession) -> None:
    for i in range(7):
        await publish(http, f"{served.url()}/{i}", f"seg{i}".encode())
    assert (await get(http, served.url() + "/1")).status == 470
    for i in range(2, 7):
        assert (await get(http, f"{served.url()}/{i}")).body == f"seg{i}".encode()


async def test_next_write_moves_on_first_byte_and_can_go_backwards(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/3", b"x")
    assert (await get(http, served.url() + "/next")).body == b"4"
    pending = StreamingPost(http, served.url() + "/1")
    channel = served.trickle.get_channel("ch")
    assert channel is not None
    await wait_until(lambda: channel.segment_at(1) is not None)
    assert channel.next_write == 4  # no byte yet
    pending.send(b"first")
    await wait_until(lambda: channel.next_write == 2)  # not a maximum: it moved back
    assert (await pending.finish()).status == 200


async def test_post_minus_one_uses_next_write(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/0", b"a")
    reply = await post(http, served.url() + "/-1", b"b")
    assert reply.headers[H_SEQ] == "1"
    assert (await get(http, served.url() + "/1")).body == b"b"


async def test_read_resolves_minus_one_and_minus_two(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/0", b"zero")
    await publish(http, served.url() + "/1", b"one")
    current = await get(http, served.url() + "/-2")
    assert (current.body, current.headers[H_SEQ], current.headers[H_LATEST]) == (b"one", "1", "2")
    waiting = asyncio.create_task(get(http, served.url() + "/-1"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await publish(http, served.url() + "/2", b"two")
    reply = await waiting
    assert (reply.body, reply.headers[H_SEQ]) == (b"two", "2")
    assert H_LATEST not in reply.headers  # only sent when it differs from the seq served


async def test_minus_two_on_a_fresh_channel_is_seq_zero(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "text/plain")
    waiting = asyncio.create_task(get(http, served.url() + "/-2"))
    await asyncio.sleep(0.05)
    await publish(http, served.url() + "/0", b"zero")
    assert (await waiting).body == b"zero"


async def test_seq_one_waits_on_a_fresh_channel(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "text/plain")
    waiting = asyncio.create_task(get(http, served.url() + "/1"))
    assert (await get(http, served.url() + "/2")).status == 470
    await publish(http, served.url() + "/0", b"zero")
    await publish(http, served.url() + "/1", b"one")
    assert (await waiting).body == b"one"


@pytest.mark.parametrize(
    ("method", "seq", "status"),
    [("GET", "-3", 400), ("GET", "abc", 400), ("POST", "-2", 400), ("POST", "1.5", 400), ("DELETE", "-1", 400)],
)
async def test_seq_validation(served: Served, http: aiohttp.ClientSession, method: str, seq: str, status: int) -> None:
    served.trickle.create_channel("ch", "text/plain")
    reply = await request(http, method, f"{served.url()}/{seq}")
    assert reply.status == status
    assert reply.body == b"Invalid idx\n"


# --- §3 POST /{ch}/{seq} -----------------------------------------------------------------------


async def test_post_without_autocreate_is_404_with_connection_close(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    served = await make_server()
    reply = await post(http, served.url() + "/0", b"x")
    assert (reply.status, reply.body) == (404, b"Stream not found\n")
    assert reply.headers["Connection"].lower() == "close"
    assert reply.headers["Content-Type"].startswith("text/plain")


async def test_autocreate_takes_content_type_and_later_posts_do_not_change_it(
    served: Served, http: aiohttp.ClientSession
) -> None:
    await publish(http, served.url() + "/0", b"x", **{"Content-Type": "video/MP2T"})
    await publish(http, served.url() + "/1", b"y", **{"Content-Type": "application/json"})
    reply = await get(http, served.url() + "/1")
    assert reply.headers["Content-Type"] == "video/MP2T"


async def test_reset_closes_older_segments_only(served: Served, http: aiohttp.ClientSession) -> None:
    hanging = StreamingPost(http, served.url() + "/0")
    hanging.send(b"partial")
    await wait_until(lambda: (c := served.trickle.get_channel("ch")) is not None and c.next_write == 1)
    channel = served.trickle.get_channel("ch")
    assert channel is not None
    ahead = StreamingPost(http, served.url() + "/3")
    await wait_until(lambda: channel.segment_at(3) is not None)
    reader = asyncio.create_task(get(http, served.url() + "/0"))
    await asyncio.sleep(0.05)
    assert not reader.done()
    await publish(http, served.url() + "/2", b"restart", **{"Lp-Trickle-Reset": "1"})
    assert (await reader).body == b"partial"
    ahead_segment = channel.segment_at(3)
    assert ahead_segment is not None and not ahead_segment.closed
    await ahead.cancel()
    await hanging.cancel()


async def test_preconnected_post_ends_empty_when_its_segment_is_closed(
    served: Served, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    await publish(http, served.url() + "/0", b"x")
    preconnect = StreamingPost(http, served.url() + "/1")
    channel = served.trickle.get_channel("ch")
    assert channel is not None
    await wait_until(lambda: channel.segment_at(1) is not None)
    assert (await request(http, "DELETE", served.url() + "/1")).status == 200
    reply = await asyncio.wait_for(preconnect.task, 5)
    assert (reply.status, reply.headers[H_SEQ], reply.body) == (200, "1", b"")
    assert reply.headers["Connection"].lower() == "close"
    assert H_CLOSED not in reply.headers
    assert channel.next_write == 2  # an empty segment still advances the seq
    await preconnect.cancel()
    await asyncio.sleep(0.05)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_preconnected_post_sees_closed_when_the_channel_is_deleted(
    served: Served, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    preconnect = StreamingPost(http, served.url() + "/0")
    await wait_until(lambda: "ch" in served.trickle.channels)
    await asyncio.sleep(0.02)
    assert (await request(http, "DELETE", served.url())).status == 200
    reply = await asyncio.wait_for(preconnect.task, 5)
    assert (reply.status, reply.headers[H_CLOSED]) == (200, "terminated")
    await preconnect.cancel()
    await asyncio.sleep(0.05)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_idle_post_gets_100_continue_keepalives(make_server: MakeServer) -> None:
    served = await make_server(autocreate=True, keepalive_interval=0.05)
    reader, writer = await asyncio.open_connection(served.server.host, served.server.port)
    writer.write(b"POST /ch/0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: a/b\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    head += await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.count(b"HTTP/1.1 100 Continue") == 2
    writer.write(b"3\r\nabc\r\n0\r\n\r\n")
    await writer.drain()
    rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"200 OK" in rest and b"Lp-Trickle-Seq: 0" in rest
    writer.close()
    await writer.wait_closed()


async def test_publisher_disconnect_mid_segment_leaves_it_open(served: Served, http: aiohttp.ClientSession) -> None:
    reader_sock, writer = await asyncio.open_connection(served.server.host, served.server.port)
    writer.write(b"POST /ch/0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await writer.drain()
    await wait_until(lambda: (c := served.trickle.get_channel("ch")) is not None and c.next_write == 1)
    channel = served.trickle.get_channel("ch")
    assert channel is not None
    subscriber = asyncio.create_task(get(http, served.url() + "/0"))
    writer.transport.abort()  # killed mid-segment
    await asyncio.sleep(0.1)
    segment = channel.segment_at(0)
    assert segment is not None and not segment.closed and not subscriber.done()
    assert (await request(http, "DELETE", served.url() + "/0")).status == 200  # what go publishers send
    assert (await subscriber).body == b"hello"
    del reader_sock


# --- §3 GET /{ch}/{seq} ------------------------------------------------------------------------


async def test_get_unknown_channel_is_404(served: Served, http: aiohttp.ClientSession) -> None:
    reply = await get(http, served.url("nope") + "/0")
    assert (reply.status, reply.body) == (404, b"Stream not found\n")


async def test_470_for_evicted_and_far_ahead(served: Served, http: aiohttp.ClientSession) -> None:
    for i in range(6):
        await publish(http, f"{served.url()}/{i}", b"x")
    for seq in (0, 8):
        reply = await get(http, f"{served.url()}/{seq}")
        assert (reply.status, reply.body) == (470, b"Entry not found")
        assert (reply.headers[H_LATEST], reply.headers[H_SEQ]) == ("6", str(seq))
        assert H_CLOSED not in reply.headers


def test_closed_channel_lookup_reports_closed_not_470() -> None:
    # Over HTTP a deleted channel is gone (404); the 200+Closed "not found" answer is for
    # requests racing the delete, so check the lookup the handler uses.
    channel = Channel("ch", "a/b")
    channel.close()
    lookup = channel.get_for_read(-1)
    assert (lookup.segment, lookup.closed, lookup.latest) == (None, True, 0)


async def test_get_blocks_until_first_byte_and_streams(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "video/MP2T")
    response_task = asyncio.create_task(http.get(served.url() + "/0"))
    await asyncio.sleep(0.05)
    assert not response_task.done()  # no headers before the first byte
    publisher = StreamingPost(http, served.url() + "/0")
    publisher.send(b"first")
    async with await asyncio.wait_for(response_task, 5) as response:
        assert response.headers["Content-Type"] == "video/MP2T"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers[H_SEQ] == "0"
        assert await response.content.readexactly(5) == b"first"  # before the POST ends
        late = asyncio.create_task(get(http, served.url() + "/0"))
        publisher.send(b"second")
        assert await response.content.readexactly(6) == b"second"
        assert (await publisher.finish()).headers[H_SEQ] == "0"
        assert await response.content.read() == b""
    assert (await late).body == b"firstsecond"  # late readers start at byte 0


async def test_empty_segment_and_deleted_channel_answers(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/0", b"")
    empty = await get(http, served.url() + "/0")
    assert (empty.status, empty.body, empty.headers[H_SEQ], empty.headers[H_LATEST]) == (200, b"", "0", "1")
    assert H_CLOSED not in empty.headers
    waiting = asyncio.create_task(get(http, served.url() + "/1"))
    await asyncio.sleep(0.05)
    await request(http, "DELETE", served.url())
    reply = await waiting
    assert (reply.status, reply.body, reply.headers[H_CLOSED], reply.headers[H_SEQ]) == (200, b"", "terminated", "1")


async def test_waiting_reader_that_disconnects_is_released(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "a/b")
    handlers_before = len(served.server.runner.server.connections)  # type: ignore[union-attr]
    waiting = asyncio.create_task(http.get(served.url() + "/0"))
    await wait_until(lambda: len(served.server.runner.server.connections) > handlers_before)  # type: ignore[union-attr]
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await wait_until(lambda: len(served.server.runner.server.connections) == handlers_before)  # type: ignore[union-attr]


# --- §3 /next, DELETE, create ---------------------------------------------------------------


async def test_next(served: Served, http: aiohttp.ClientSession) -> None:
    assert (await get(http, served.url() + "/next")).status == 404
    served.trickle.create_channel("ch", "a/b")
    reply = await get(http, served.url() + "/next")
    assert (reply.status, reply.body, reply.headers[H_LATEST]) == (200, b"0", "0")
    assert H_CLOSED not in reply.headers


async def test_delete_segment_cases(served: Served, http: aiohttp.ClientSession) -> None:
    assert (await request(http, "DELETE", served.url() + "/0")).status == 404
    await publish(http, served.url() + "/0", b"x")
    missing = await request(http, "DELETE", served.url() + "/3")
    assert (missing.status, missing.body) == (400, b"Nonexistent segment\n")
    assert (await request(http, "DELETE", served.url() + "/0")).status == 200


async def test_delete_channel(served: Served, http: aiohttp.ClientSession) -> None:
    unknown = await request(http, "DELETE", served.url())
    assert (unknown.status, unknown.body) == (400, b"Invalid stream\n")
    await publish(http, served.url() + "/0", b"x")
    assert (await request(http, "DELETE", served.url())).status == 200
    assert (await get(http, served.url() + "/0")).status == 404
    assert (await get(http, served.url() + "/next")).status == 404


async def test_explicit_create(served: Served, http: aiohttp.ClientSession) -> None:
    assert (await post(http, served.url(), headers={"Expect-Content": "application/json"})).status == 200
    assert (await post(http, served.url(), headers={"Expect-Content": "video/MP2T"})).status == 200
    await publish(http, served.url() + "/0", b"{}", **{"Content-Type": "text/plain"})
    assert (await get(http, served.url() + "/0")).headers["Content-Type"] == "application/json"


# --- §3 idle sweep and changefeed ------------------------------------------------------------


async def test_idle_sweep_uses_write_time_and_spares_underscore_channels(
    served: Served, http: aiohttp.ClientSession, clock: object
) -> None:
    from trickle_helpers import FakeClock

    assert isinstance(clock, FakeClock)
    served.trickle.create_channel("busy", "a/b")
    served.trickle.create_channel("idle", "a/b")
    served.trickle.create_channel("_internal", "a/b")
    clock.now += 200
    await publish(http, served.url("busy") + "/0", b"x")
    await get(http, served.url("idle") + "/next")  # reads do not refresh write time
    clock.now += 200
    assert served.trickle.sweep() == ["idle"]
    assert (await get(http, served.url("idle") + "/next")).status == 404
    assert set(served.trickle.channels) == {"busy", "_internal"}


async def test_sweeper_runs_in_the_background(make_server: MakeServer, http: aiohttp.ClientSession, clock: object) -> None:
    from trickle_helpers import FakeClock

    assert isinstance(clock, FakeClock)
    served = await make_server(autocreate=True, sweep_interval=0.02, idle_timeout=10)
    served.trickle.create_channel("ch", "a/b")
    clock.now += 11
    await wait_until(lambda: "ch" not in served.trickle.channels)


async def test_changefeed(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    served = await make_server(autocreate=True, changefeed=True)
    await publish(http, served.url("a") + "/0", b"x")
    await request(http, "DELETE", served.url("a"))
    added = await get(http, served.url("_changes") + "/0")
    removed = await get(http, served.url("_changes") + "/1")
    assert added.headers["Content-Type"] == "application/json"
    assert (added.body, removed.body) == (b'{"added": ["a"]}', b'{"removed": ["a"]}')


# --- §4 headers: auth ------------------------------------------------------------------------


async def test_bearer_auth(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    served = await make_server(autocreate=True, auth_token="s3cret")
    for method, suffix in (("POST", "/0"), ("GET", "/0"), ("GET", "/next"), ("DELETE", ""), ("POST", "")):
        reply = await request(http, method, served.url() + suffix)
        assert reply.status == 401, (method, suffix)
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    wrong = await post(http, served.url() + "/0", b"x", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    good = {"Authorization": "Bearer s3cret"}
    assert (await post(http, served.url() + "/0", b"x", headers=good)).status == 200
    assert (await get(http, served.url() + "/0", headers=good)).body == b"x"


# --- limits (bounded memory) -----------------------------------------------------------------


async def test_stream_cap(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    served = await make_server(autocreate=True, max_streams=2)
    await publish(http, served.url("a") + "/0", b"x")
    await publish(http, served.url("b") + "/0", b"x")
    reply = await post(http, served.url("c") + "/0", b"x")
    assert (reply.status, reply.body) == (503, b"Too many streams\n")
    assert (await post(http, served.url("d"), headers={"Expect-Content": "a/b"})).status == 503


async def test_segment_size_cap(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    served = await make_server(autocreate=True, max_segment_bytes=1000)
    served.trickle.create_channel("ch", "a/b")
    reader = asyncio.create_task(get(http, served.url() + "/0"))
    big = StreamingPost(http, served.url() + "/0")
    big.send(b"x" * 600)
    channel = served.trickle.get_channel("ch")
    assert channel is not None
    await wait_until(lambda: (seg := channel.segment_at(0)) is not None and seg.size == 600)
    big.send(b"y" * 600)
    reply = await big.finish()
    assert (reply.status, reply.body) == (413, b"Segment exceeds 1000 bytes\n")
    assert (await reader).body == b"x" * 600  # readers get what fit, then a clean end
    segment = channel.segment_at(0)
    assert segment is not None and segment.closed and segment.size == 600


# --- §6 edge cases and §10 checklist ---------------------------------------------------------


async def test_10_1_close(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    served = await make_server()
    assert (await post(http, served.url() + "/0", b"x")).status == 404
    served.trickle.create_channel("ch", "video/MP2T")
    await publish(http, served.url() + "/0", b"zero")
    await publish(http, served.url() + "/1", b"one")
    for seq in (0, 1):
        reply = await get(http, f"{served.url()}/{seq}")
        assert (reply.headers[H_SEQ], reply.headers[H_LATEST]) == (str(seq), "2")
    pending = asyncio.create_task(get(http, served.url() + "/2"))
    await asyncio.sleep(0.05)
    await request(http, "DELETE", served.url())
    assert (await pending).headers[H_CLOSED] == "terminated"
    assert (await post(http, served.url() + "/2", b"x")).status == 404
    assert (await get(http, served.url() + "/-1")).status == 404


async def test_10_3_http_create_contract(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    closed = await make_server()
    assert (await post(http, closed.url())).status == 404
    assert (await post(http, closed.url() + "/0")).status == 404
    opened = await make_server(autocreate=True)
    assert (await post(http, opened.url())).status == 200
    assert (await post(http, opened.url("other") + "/0")).status == 200


async def test_10_4_before_create(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    seen: list[tuple[str, str, bool]] = []

    async def hook(request: aiohttp.web.Request, name: str) -> None:
        seen.append((name, request.headers.get("Expect-Content", ""), name in served.trickle.channels))
        if name == "forbidden":
            raise TrickleRequestError(403, "nope")
        if name == "broken":
            raise RuntimeError("boom")

    served = await make_server(autocreate=True, before_create=hook)
    assert (await post(http, served.url("ok"), headers={"Expect-Content": "a/b"})).status == 200
    assert seen == [("ok", "a/b", False)]
    assert (await get(http, served.url("ok") + "/next")).status == 200
    forbidden = await post(http, served.url("forbidden"))
    assert (forbidden.status, forbidden.body) == (403, b"nope\n")
    assert (await post(http, served.url("broken"))).status == 500
    for name in ("forbidden", "broken"):
        assert (await get(http, served.url(name) + "/next")).status == 404


async def test_10_5_before_delete(make_server: MakeServer, http: aiohttp.ClientSession) -> None:
    async def hook(request: aiohttp.web.Request, name: str) -> None:
        if name == "guarded":
            raise TrickleRequestError(401)
        if name == "broken":
            raise RuntimeError("boom")

    served = await make_server(autocreate=True, before_delete=hook)
    for name in ("guarded", "broken", "ok"):
        served.trickle.create_channel(name, "a/b")
    assert (await request(http, "DELETE", served.url("guarded"))).status == 401
    assert (await request(http, "DELETE", served.url("broken"))).status == 500
    assert (await get(http, served.url("guarded") + "/next")).status == 200
    assert (await request(http, "DELETE", served.url("ok"))).status == 200
    assert (await get(http, served.url("ok") + "/next")).status == 404


async def test_10_6_set_seq_rereads_retained(served: Served, http: aiohttp.ClientSession) -> None:
    for i in range(4):
        await publish(http, f"{served.url()}/{i}", f"s{i}".encode())
    for seq in (3, 0, 2, 1, 3):
        assert (await get(http, f"{served.url()}/{seq}")).body == f"s{seq}".encode()


async def test_10_7_same_seq_rewrite_appends(served: Served, http: aiohttp.ClientSession) -> None:
    first = StreamingPost(http, served.url() + "/0")
    first.send(b"Hello")
    await wait_until(lambda: (c := served.trickle.get_channel("ch")) is not None and c.next_write == 1)
    async with await http.get(served.url() + "/0") as live:
        assert await live.content.readexactly(5) == b"Hello"
        second = StreamingPost(http, served.url() + "/0")
        second.send(b"GoodbyWorld")
        assert await live.content.readexactly(11) == b"GoodbyWorld"
        await first.finish()
        await second.finish()
    assert (await get(http, served.url() + "/0")).body == b"HelloGoodbyWorld"


async def test_10_8_publisher_reset(served: Served, http: aiohttp.ClientSession) -> None:
    hanging = StreamingPost(http, served.url() + "/0")
    hanging.send(b"part")
    await wait_until(lambda: (c := served.trickle.get_channel("ch")) is not None and c.next_write == 1)
    reader = asyncio.create_task(get(http, served.url() + "/0"))
    await asyncio.sleep(0.05)
    reply = await post(http, served.url() + "/-1", b"restart", headers={"Lp-Trickle-Reset": "1"})
    assert reply.headers[H_SEQ] == "1"
    assert (await reader).body == b"part"
    assert (await get(http, served.url() + "/0")).body == b"part"
    assert (await get(http, served.url() + "/1")).body == b"restart"
    await hanging.cancel()


async def test_10_9_empty_segment(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/0", b"")
    reply = await get(http, served.url() + "/0")
    assert (reply.status, reply.body, reply.headers[H_SEQ], reply.headers[H_LATEST]) == (200, b"", "0", "1")
    assert H_CLOSED not in reply.headers


async def test_10_12_subscriber_start_positions(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "a/b")
    fresh = asyncio.create_task(get(http, served.url() + "/-1"))
    await asyncio.sleep(0.02)
    await publish(http, served.url() + "/0", b"zero")
    assert (await fresh).headers[H_SEQ] == "0"
    await publish(http, served.url() + "/1", b"one")
    assert (await get(http, served.url() + "/-2")).headers[H_SEQ] == "1"
    nxt = asyncio.create_task(get(http, served.url() + "/-1"))
    await asyncio.sleep(0.02)
    await publish(http, served.url() + "/2", b"two")
    assert (await nxt).headers[H_SEQ] == "2"
    assert (await get(http, served.url() + "/1")).body == b"one"


async def test_10_13_overrun_seq(served: Served, http: aiohttp.ClientSession) -> None:
    served.trickle.create_channel("ch", "a/b")
    lookup = await get(http, served.url() + "/next")
    waiting_seq = int(lookup.body)
    for i in range(7):
        await publish(http, f"{served.url()}/{i}", f"s{i}".encode())
    assert (await get(http, f"{served.url()}/{waiting_seq}")).status == 470
    newest = await get(http, served.url() + "/-2")
    assert (newest.headers[H_SEQ], newest.body) == ("6", b"s6")


async def test_10_14_preconnect_on_empty(served: Served, http: aiohttp.ClientSession) -> None:
    await publish(http, served.url() + "/0", b"x")
    preconnect = StreamingPost(http, served.url() + "/1")
    await wait_until(lambda: served.trickle.get_channel("ch").segment_at(1) is not None)  # type: ignore[union-attr]
    assert (await preconnect.finish()).headers[H_SEQ] == "1"  # cancelled: zero bytes
    assert (await get(http, served.url() + "/next")).body == b"2"
    await request(http, "DELETE", served.url())
    assert (await get(http, served.url() + "/2")).status == 404


def test_10_15_segment_buffer_reads_as_the_tail_grows() -> None:
    from trickle.segment import SegmentBuffer

    buffer = SegmentBuffer(0)
    buffer.append(b"ab")
    assert buffer.chunks_from(0) == b"ab"
    buffer.append(b"cd")
    buffer.append(b"ef")
    assert buffer.chunks_from(1) == b"cdef"
    assert buffer.chunks_from(3) == b""
    buffer.close()
    buffer.append(b"late")  # kept for later readers, as go-livepeer does
    assert buffer.data() == b"abcdeflate"
