"""Helpers for the live tests: play the orchestrator's side of a live stream over trickle."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from livestream.live import SessionConfig
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
