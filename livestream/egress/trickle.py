"""Trickle MPEG-TS output: the runner contract's `publish_url`, one segment per keyframe.

A `QueuedSink` like every output, but what it queues is bytes: the encoding thread muxes each
frame's packets (`livestream.media.ts_mux`, video then the audio that frame released) in `put`
and queues them as one chunk, so the loop wakes once per frame and writes one chunk (no packet
objects, muxing or per-packet awaits on the loop). The orchestrator reads a frame as soon as it
is encoded; a video keyframe closes the segment and opens the next. Past `MAX_CHUNKS` queued
frames the queue is dropped and the sink skips to the next keyframe, as every sink does. A
failed output channel ends the session (it is the stream's output), through `on_failure`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable

import aiohttp

from trickle import SegmentWriter, TrickleError, TricklePublisher

from ..media.packets import EncodedPacket
from ..media.ts_mux import SEGMENT_START, TsMuxer
from . import QueuedSink

__all__ = ["TrickleSink"]

#: Frames queued for the channel (about 30 s at 30 fps) before it drops a GOP.
MAX_CHUNKS = 1024


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
        super().__init__("trickle", max_packets=MAX_CHUNKS)
        self.url = url
        self._http = http
        self._on_first_bytes = on_first_bytes
        self._on_failure = on_failure
        self._muxer = TsMuxer()
        #: Muxed bytes (one chunk per frame), and SEGMENT_START where a segment begins.
        self._chunks: deque[bytes | None] = deque()
        #: Segments completed.
        self.segments = 0

    def status(self) -> dict[str, object]:
        return {"segments": self.segments, "bytes": self._muxer.bytes}

    @property
    def depth(self) -> int:
        return len(self._chunks)

    # --- producer side (encode thread) ----------------------------------------------------

    def put_batch(self, packets: list[EncodedPacket]) -> None:
        """Mux here (the thread that encodes; one at a time) and queue one chunk per call."""
        with self._lock:
            if self._ended:
                return
            self.received += len(packets)
            out: list[bytes | None] = []
            data = bytearray()
            for packet in packets:
                if self._skipping:
                    if not (packet.kind == "video" and packet.keyframe):
                        self.dropped += 1
                        continue
                    self._skipping = False
                for chunk in self._muxer.mux(packet):
                    if chunk is SEGMENT_START:
                        if data:
                            out.append(bytes(data))
                            data.clear()
                        out.append(SEGMENT_START)
                    else:
                        data += chunk
            if data:
                out.append(bytes(data))
            if len(self._chunks) + len(out) > self.max_packets:
                # Full: drop what is queued and everything up to the next keyframe.
                self.dropped += sum(1 for c in self._chunks if c is not None) + len(out)
                self._chunks.clear()
                self._skipping = True
                return
            self._chunks.extend(out)
            wake, self._waiting = self._waiting, False
        if wake:
            self._wake()

    def clear(self) -> None:
        with self._lock:
            self.dropped += sum(1 for c in self._chunks if c is not None)
            self._chunks.clear()
            self._skipping = True

    # --- consumer side (the sink's task) --------------------------------------------------

    async def _take(self) -> list[bytes | None] | None:
        """Everything queued (chunks and segment starts), or None once ended and drained."""
        assert self._ready is not None, "start() the sink first"
        while True:
            with self._lock:
                if self._chunks:
                    items = list(self._chunks)
                    self._chunks.clear()
                    return items
                if self._ended:
                    return None
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()

    async def consume(self) -> None:
        try:
            async with TricklePublisher(self.url, "video/mp2t", session=self._http) as publisher:
                await self._publish(publisher)
        except TrickleError as exc:
            self._on_failure(f"output channel failed: {exc}")
            while await self._take() is not None:  # the session is ending: take what comes
                pass

    async def _publish(self, publisher: TricklePublisher) -> None:
        async with contextlib.AsyncExitStack() as stack:
            segment: SegmentWriter | None = None
            pending = bytearray()

            async def send() -> None:
                if pending and segment is not None:
                    first = segment.bytes_written == 0 and self.segments == 0
                    await segment.write(bytes(pending))
                    pending.clear()
                    if first:
                        self._on_first_bytes()

            while (items := await self._take()) is not None:
                for item in items:  # one write per segment part, not per frame
                    if item is SEGMENT_START:
                        await send()
                        if segment is not None:
                            await stack.aclose()
                            self.segments += 1
                        segment = await stack.enter_async_context(publisher.segment())
                    else:
                        pending += item
                await send()
            if segment is not None:
                await stack.aclose()
                self.segments += 1
