"""Helpers for the live tests: play the orchestrator's side of a live stream over trickle."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import aiohttp
import av

from livestream.egress import EncodedPacket, QueuedSink
from livestream.live import SessionConfig
from livestream.live.testsrc import draw_frame
from trickle import TricklePublisher, TrickleSubscriber

# A generous queue lag: these slow shared cores must not drop frames in tests that count them.
TEST_CONFIG = SessionConfig(
    status_interval=0.25, input_timeout=2.0, stop_timeout=3.0, max_restarts=1, max_queue_lag=5.0, max_queue_frames=256
)


@dataclass
class Channels:
    """The four channels of one stream on the orchestrator's trickle server (`{mid}`...)."""

    base: str
    mid: str

    @property
    def subscribe_url(self) -> str:
        return f"{self.base}{self.mid}"

    @property
    def publish_url(self) -> str:
        return f"{self.base}{self.mid}-out"

    @property
    def control_url(self) -> str:
        return f"{self.base}{self.mid}-control"

    @property
    def events_url(self) -> str:
        return f"{self.base}{self.mid}-events"

    def start_body(self, **extra: Any) -> dict[str, Any]:
        return {
            "subscribe_url": self.subscribe_url,
            "publish_url": self.publish_url,
            "control_url": self.control_url,
            "events_url": self.events_url,
            "gateway_request_id": self.mid,
            **extra,
        }


async def publish_segments(
    publisher: TricklePublisher, segments: Sequence[bytes], *, gap: float = 0.0, chunk: int = 16384
) -> None:
    """Write each segment (in chunks, as a live source does), `gap` seconds apart."""
    for data in segments:
        async with publisher.segment() as seg:
            for i in range(0, len(data), chunk):
                await seg.write(data[i : i + chunk])
        if gap:
            await asyncio.sleep(gap)


@dataclass
class Collected:
    segments: list[bytes] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(self.segments)


async def collect(url: str, http: aiohttp.ClientSession, out: Collected, *, start_seq: int = 0) -> None:
    """Read a channel until it closes."""
    async with TrickleSubscriber(url, start_seq=start_seq, session=http) as sub:
        async for segment in sub:
            out.segments.append(await segment.read())
            out.arrival.append(time.monotonic())


def events_of(collected: Collected) -> list[dict[str, Any]]:
    return [json.loads(s) for s in collected.segments if s]


async def wait_for(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


# The tiny diffusion models run at ~15 fps here: no input timeout while the first segment drains.
DIFFUSION_CONFIG = SessionConfig(
    status_interval=0.25, input_timeout=60.0, stop_timeout=5.0, max_queue_lag=10.0, max_queue_frames=256
)


async def live_status(engine: Any, stream: str) -> dict[str, Any]:
    """`GET /live/{stream}/status` of the engine's test client."""
    resp = await engine.get(f"/live/{stream}/status")
    assert resp.status == 200
    result: dict[str, Any] = await resp.json()
    return result


async def send_params(engine: Any, stream: str, control: TricklePublisher, params: dict[str, Any]) -> None:
    """One control message (a full param set), then wait until the session applied it."""
    async with control.segment() as seg:
        await seg.write(json.dumps(params).encode())

    async def applied() -> bool:
        return (await live_status(engine, stream))["inference_status"]["last_params_update_time"] is not None

    await wait_for(applied, timeout=30)


async def run_live_stream(
    engine: Any,
    orchestrator: str,
    http: aiohttp.ClientSession,
    stream: str,
    model_id: str,
    params: dict[str, Any],
    segments: Sequence[bytes],
    midstream: Callable[[TricklePublisher], Awaitable[None]] | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Play the orchestrator for one stream: start it, publish the first segment, wait until it
    came out (30 frames), run `midstream(control publisher)`, publish the rest, read the output
    and events channels to their end. Returns the decoded output frames and the events."""
    from livestream.live.testsrc import decode_ts

    ch = Channels(orchestrator, stream)
    for url in (ch.publish_url, ch.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200
    out, events = Collected(), Collected()
    readers = [
        asyncio.create_task(collect(ch.publish_url, http, out)),
        asyncio.create_task(collect(ch.events_url, http, events)),
    ]
    async with (
        TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub,
        TricklePublisher(ch.control_url, "application/json", session=http) as control,
    ):
        resp = await engine.post("/live-video-to-video", json=ch.start_body(model_id=model_id, stream_id=stream, params=params))
        assert resp.status == 200, await resp.text()
        await publish_segments(pub, segments[:1])

        async def first_segment_done() -> bool:
            return (await live_status(engine, stream))["frames_out"] >= 30

        await wait_for(first_segment_done, timeout=60)
        if midstream is not None:
            await midstream(control)
        await publish_segments(pub, segments[1:])
    async with asyncio.timeout(60):
        await asyncio.gather(*readers)
    frames, _, _ = decode_ts(out.data)
    return frames, [e["event"] for e in events_of(events)]


def numbered_frame(n: int, size: int = 64) -> av.VideoFrame:
    """Frame `n` of a 30 fps stream (90 kHz pts), its number drawn in (`testsrc.read_number`)."""
    frame = av.VideoFrame.from_ndarray(draw_frame(n, size, size), format="rgb24")
    frame.pts, frame.time_base = n * 3000, Fraction(1, 90000)
    return frame


class CollectSink(QueuedSink):
    """An output that keeps every packet; `slow` sleeps on each one (its queue overflows)."""

    def __init__(self, name: str = "collect", *, slow: bool = False, max_packets: int = 4096) -> None:
        super().__init__(name, max_packets=max_packets)
        self.packets: list[EncodedPacket] = []
        self.slow = slow
        self.finished = False

    async def consume(self) -> None:
        while (packet := await self.get()) is not None:
            if self.slow:
                await asyncio.sleep(10)
            self.packets.append(packet)
        self.finished = True

    def video_frames(self) -> list[av.VideoFrame]:
        """The collected video, decoded."""
        codec = av.CodecContext.create("h264", "r")
        return [f for p in self.packets if p.kind == "video" for f in codec.decode(av.Packet(p.data))]
