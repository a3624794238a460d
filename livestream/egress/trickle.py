"""Trickle MPEG-TS output: the runner contract's `publish_url`, one segment per keyframe.

A `QueuedSink` like every output: packets are muxed (`livestream.media.ts_mux`) and their bytes
written to the open segment at once, so the orchestrator reads a frame as soon as it is
encoded; a video keyframe closes the segment and opens the next. A failed output channel ends
the session (it is the stream's output), through `on_failure`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import aiohttp

from trickle import SegmentWriter, TrickleError, TricklePublisher

from ..media.ts_mux import SEGMENT_START, TsMuxer
from . import QueuedSink

__all__ = ["TrickleSink"]

#: Packets queued for the channel (about 20 s of 30 fps video with audio) before it drops a GOP.
MAX_PACKETS = 1024


class TrickleSink(QueuedSink):
    """Publishes the session's packets as MPEG-TS segments to a trickle channel."""

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        on_first_bytes: Callable[[], None],
        on_failure: Callable[[str], None],
    ) -> None:
        super().__init__("trickle", max_packets=MAX_PACKETS)
        self.url = url
        self._http = http
        self._on_first_bytes = on_first_bytes
        self._on_failure = on_failure
        self._muxer = TsMuxer()
        #: Segments completed.
        self.segments = 0

    def status(self) -> dict[str, object]:
        return {"segments": self.segments, "bytes": self._muxer.bytes}

    async def consume(self) -> None:
        try:
            async with TricklePublisher(self.url, "video/mp2t", session=self._http) as publisher:
                await self._publish(publisher)
        except TrickleError as exc:
            self._on_failure(f"output channel failed: {exc}")
            while await self.get() is not None:  # the session is ending: take what comes
                pass

    async def _publish(self, publisher: TricklePublisher) -> None:
        async with contextlib.AsyncExitStack() as stack:
            segment: SegmentWriter | None = None
            first = True
            while (packet := await self.get()) is not None:
                for chunk in self._muxer.mux(packet):
                    if chunk is SEGMENT_START:
                        if segment is not None:
                            await stack.aclose()
                            self.segments += 1
                        segment = await stack.enter_async_context(publisher.segment())
                        continue
                    assert segment is not None
                    await segment.write(chunk)
                    if first:
                        first = False
                        self._on_first_bytes()
            if segment is not None:
                await stack.aclose()
                self.segments += 1
