"""Generated MPEG-TS input through live sessions, while another session runs.

Each fuzzed stream gets real segments mutated at the packet level (corrupted bytes, PID changes,
PAT/PMT removed, garbage and zero bytes inserted, cut short) over a real trickle channel. Every
fuzzed session ends with a final event (its input closed, or an error saying why); the healthy
session on the same engine delivers every one of its frames, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_helpers import Channels, Collected, collect, events_of, publish_segments

from livestream.live.testsrc import decode_ts, read_number
from livestream.settings import Settings
from trickle import TricklePublisher

from reliability_helpers import fuzz_examples

_PACKET = 188
FUZZED_STREAMS = min(fuzz_examples(6), 40)  # each is a live session: a long run caps them

#: One mutation: (kind, where, value); applied at packet granularity.
mutation = st.tuples(
    st.sampled_from(["flip", "pid", "drop-tables", "garbage", "zeros", "cut", "dup", "sync"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)


def _mutate(segment: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    packets = [bytearray(segment[i : i + _PACKET]) for i in range(0, len(segment), _PACKET)]
    for kind, where, value in ops:
        if not packets:
            break
        i = where % len(packets)
        pkt = packets[i]
        if kind in ("flip", "pid", "sync") and len(pkt) < 5:
            continue  # a packet an earlier "cut" left short has no payload or PID to change
        if kind == "flip":
            pkt[4 + value % (len(pkt) - 4)] ^= 0xFF
        elif kind == "pid":  # every packet of this one's PID moves to another PID
            old = ((pkt[1] & 0x1F) << 8) | pkt[2]
            new = (old + value + 1) & 0x1FFF
            for p in packets:
                if len(p) >= 3 and ((p[1] & 0x1F) << 8) | p[2] == old:
                    p[1], p[2] = (p[1] & 0xE0) | new >> 8, new & 0xFF
        elif kind == "drop-tables":  # no PAT, and no PMT (PID 0x1000 from ffmpeg's muxer)
            packets = [p for p in packets if not (len(p) >= 3 and ((p[1] & 0x1F) << 8) | p[2] in (0, 0x1000))]
        elif kind == "garbage":
            packets.insert(i, bytearray((value * 7 + n) & 0xFF for n in range(_PACKET + value)))
        elif kind == "zeros":
            packets.insert(i, bytearray(_PACKET * (1 + value % 8)))
        elif kind == "cut":
            packets = packets[:i] + [pkt[: value % _PACKET]]
        elif kind == "dup":
            packets.insert(i, bytearray(pkt))
        elif kind == "sync":
            pkt[0] = value
    return b"".join(bytes(p) for p in packets)


async def _final(events: Collected) -> dict[str, Any]:
    finals = [e["event"] for e in events_of(events) if e["event"].get("final")]
    assert finals, "the session ended without a final event"
    return finals[-1]


async def _run_fuzzed(engine: TestClient[Any, Any], http: aiohttp.ClientSession, base: str, n: int, segments: list[bytes]) -> dict[str, Any]:
    ch = Channels(base, f"fz{n}")
    for url in (ch.publish_url, ch.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200
    out, events = Collected(), Collected()
    readers = [asyncio.create_task(collect(ch.publish_url, http, out)), asyncio.create_task(collect(ch.events_url, http, events))]
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        resp = await engine.post("/live-video-to-video", json=ch.start_body(model_id="noop", stream_id=f"fz{n}"))
        assert resp.status == 200, await resp.text()
        await publish_segments(pub, segments, gap=0.2)
    async with asyncio.timeout(30):
        await asyncio.gather(*readers)
    final = await _final(events)
    if final["state"] == "ERROR":
        assert final["error"], final
    return final


async def test_fuzzed_ts_input_ends_its_session_and_the_healthy_one_goes_on(
    engine_factory: Any, orchestrator: str, http: aiohttp.ClientSession, ts_segments: Any
) -> None:
    base_segments = ts_segments(90, size=64, audio=True)
    cases: list[list[bytes]] = []

    @settings(max_examples=FUZZED_STREAMS, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(st.tuples(st.integers(0, 2), st.lists(mutation, min_size=1, max_size=6)), min_size=1, max_size=3))
    def gather(plan: list[tuple[int, list[tuple[str, int, int]]]]) -> None:
        cases.append([_mutate(base_segments[which], ops) for which, ops in plan])

    gather()
    cases[:2] = [[bytes(4096)], [b"\x47" + bytes(187)] * 50]  # all zeros; sync bytes and nothing else
    engine = await engine_factory(Settings(host="127.0.0.1", port=0, max_live_sessions=len(cases) + 1))

    good = Channels(orchestrator, "healthy")
    for url in (good.publish_url, good.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200
    good_out = Collected()
    reader = asyncio.create_task(collect(good.publish_url, http, good_out))
    async with TricklePublisher(good.subscribe_url, "video/mp2t", session=http) as pub:
        resp = await engine.post("/live-video-to-video", json=good.start_body(model_id="noop", stream_id="healthy"))
        assert resp.status == 200
        finals = await asyncio.gather(
            publish_segments(pub, base_segments * 2, gap=0.3),
            *(_run_fuzzed(engine, http, orchestrator, n, segments) for n, segments in enumerate(cases)),
        )
    async with asyncio.timeout(30):
        await reader
    frames, _, _ = decode_ts(good_out.data)
    assert [read_number(f) for f in frames] == list(range(90)) * 2
    states = [f["state"] for f in finals[1:]]
    assert set(states) <= {"OFFLINE", "ERROR"}, finals
    assert (await engine.get("/health")).status == 200
