"""Session outputs: the one encode per session, fanned out to packet sinks.

This package is the room for outputs: the contract below, and one module per protocol that has
no package of its own (`trickle.py`, the runner contract's MPEG-TS output). RTMP push
(`livestream.rtmp.push`) and WHEP (`livestream.webrtc.engine`) implement it in their protocol
packages; `livestream.protocols` maps output URL schemes to sinks.

Every session encodes once (x264, zero latency, no B-frames; `livestream.media`). The encode
thread hands each encoded packet, as an immutable `EncodedPacket`, to the session's
`SinkFanout`, which puts it into the bounded queue of every attached `PacketSink`:

    encode thread ──EncodedPacket──▶ SinkFanout ──put()──▶ sink queue ──▶ sink task (loop)
                                                           (bounded)      trickle, RTMP push, WHEP

Writing a sink (the interface the RTMP push and WHEP viewers code against):

    class MySink(QueuedSink):
        async def consume(self) -> None:
            while (packet := await self.get()) is not None:   # None: the stream ended
                ...                                            # send it somewhere

    session.attach_sink(MySink("whep-1"))    # any time while the session runs; starts its task
    session.request_keyframe()               # next frame is an IDR (attach does this too)
    await session.detach_sink(sink)          # stops its task; the others go on

Rules:
- `put()` (or `put_batch()`: one frame's packets, video then the audio it released, with one
  wake-up of the loop) is called from the thread that encodes (the encode thread; the decode
  thread for a pass-through pipeline's frames), one at a time, and never blocks. A sink's queue holds at most
  `max_packets`; when it is full the sink drops packets until the next video keyframe (so a
  decoder downstream never sees a broken GOP) and counts them in `dropped`. A slow or dead
  sink therefore never stalls the encoder or the other sinks.
- Video packets are H.264 Annex B (start codes, SPS/PPS in front of every IDR), pts/dts on
  `time_base` (90 kHz). Audio packets are AAC: raw frames with `extradata` (the
  AudioSpecificConfig), or ADTS frames (`adts=True`) when an MPEG-TS input's AAC is copied; or
  the copied input's MP2/MP3/AC-3 frames. Audio follows video: the encode stage releases an
  audio packet once the video has reached its time (video never waits for audio).
- A sink reports problems with `self.report(message)`: an `error` event on the session, the
  session goes on. Exceptions escaping `consume()` are reported the same way and end only
  that sink.
- At the end of the session the fan-out ends every sink (`get()` returns None after the
  queued packets) and the session awaits them for a bounded time, then cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable

from ..media.packets import EncodedPacket

__all__ = ["EncodedPacket", "PacketSink", "QueuedSink", "SinkFanout"]

log = logging.getLogger(__name__)


class PacketSink:
    """Something the session's encoded packets go to. Subclass `QueuedSink` rather than this."""

    name: str = "sink"

    def put(self, packet: EncodedPacket) -> None:
        """Encode thread: take a packet. Must never block."""
        raise NotImplementedError

    def put_batch(self, packets: list[EncodedPacket]) -> None:
        """Encode thread: take one frame's packets, in order (a sink may wake its task once)."""
        for packet in packets:
            self.put(packet)

    def end(self) -> None:
        """Any thread: no more packets will come."""
        raise NotImplementedError

    def start(self, report: Callable[[str], None]) -> None:
        """Loop: start the sink's task; `report(message)` turns a problem into a session event."""
        raise NotImplementedError

    async def aclose(self, timeout: float = 0.0) -> None:
        """Loop: wait up to `timeout` for the sink to finish what it holds, then cancel it."""
        raise NotImplementedError


class QueuedSink(PacketSink):
    """A sink with a bounded packet queue (thread-safe put, async get) and one owned task."""

    def __init__(self, name: str, *, max_packets: int = 256) -> None:
        self.name = name
        self.max_packets = max_packets
        self._items: deque[EncodedPacket] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._ended = False
        self._skipping = False
        #: The task waits for a wake-up (under the lock): `put` wakes the loop once per wait.
        self._waiting = False
        self._task: asyncio.Task[None] | None = None
        self._report: Callable[[str], None] = lambda message: log.warning("%s: %s", name, message)
        self.received = 0
        self.dropped = 0

    # --- producer side (encode thread) ----------------------------------------------------

    def put(self, packet: EncodedPacket) -> None:
        self.put_batch([packet])

    def put_batch(self, packets: list[EncodedPacket]) -> None:
        with self._lock:
            if self._ended:
                return
            for packet in packets:
                self._add(packet)
            wake, self._waiting = self._waiting, False
        if wake:
            self._wake()

    def _add(self, packet: EncodedPacket) -> None:
        """Under the lock: queue one packet, or drop it (see the module docstring's rules)."""
        self.received += 1
        if self._skipping:
            if not (packet.kind == "video" and packet.keyframe):
                self.dropped += 1
                return
            self._skipping = False
        if len(self._items) >= self.max_packets:
            # Full: drop what is queued and everything up to the next keyframe.
            self.dropped += len(self._items) + 1
            self._items.clear()
            self._skipping = True
            return
        self._items.append(packet)

    def end(self) -> None:
        with self._lock:
            self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._loop is None or self._ready is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(self._ready.set)

    # --- consumer side (the sink's task) --------------------------------------------------

    async def get(self) -> EncodedPacket | None:
        """The next packet, or None once the stream has ended and the queue is drained."""
        assert self._ready is not None, "start() the sink first"
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._ended:
                    return None
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()

    def clear(self) -> None:
        """Drop what is queued and wait for the next keyframe (after a reconnect, say)."""
        with self._lock:
            self.dropped += len(self._items)
            self._items.clear()
            self._skipping = True

    @property
    def depth(self) -> int:
        return len(self._items)

    def report(self, message: str) -> None:
        self._report(message)

    async def consume(self) -> None:
        """Override: take packets with `get()` until it returns None."""
        raise NotImplementedError

    # --- lifetime -------------------------------------------------------------------------

    def start(self, report: Callable[[str], None]) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._report = report
        self._task = asyncio.create_task(self._main(), name=f"live-sink-{self.name}")

    async def _main(self) -> None:
        try:
            await self.consume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("sink %s failed", self.name, exc_info=True)
            self.report(f"output {self.name} failed: {type(exc).__name__}: {exc}")
        finally:
            self.end()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def aclose(self, timeout: float = 0.0) -> None:
        self.end()
        task = self._task
        if task is None:
            return
        if timeout > 0 and not task.done():
            await asyncio.wait([task], timeout=timeout)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SinkFanout:
    """The session's attached sinks. `put` (encode thread) copies each packet reference into
    every sink's queue; `attach`/`detach` may happen at any time from the loop."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self._report = report
        self._sinks: tuple[PacketSink, ...] = ()
        self._ended = False

    @property
    def sinks(self) -> tuple[PacketSink, ...]:
        return self._sinks

    def __bool__(self) -> bool:
        return bool(self._sinks)

    def attach(self, sink: PacketSink) -> None:
        if sink in self._sinks:
            return
        sink.start(self._report)
        if self._ended:
            sink.end()
        self._sinks = (*self._sinks, sink)  # replaced, never mutated: the encode thread iterates a snapshot

    async def detach(self, sink: PacketSink, timeout: float = 0.0) -> None:
        self._sinks = tuple(s for s in self._sinks if s is not sink)
        await sink.aclose(timeout)

    def put(self, packet: EncodedPacket) -> None:
        for sink in self._sinks:
            sink.put(packet)

    def put_batch(self, packets: list[EncodedPacket]) -> None:
        """One frame's packets (video, then the audio it released) to every sink at once."""
        if packets:
            for sink in self._sinks:
                sink.put_batch(packets)

    def end(self) -> None:
        self._ended = True
        for sink in self._sinks:
            sink.end()

    async def aclose(self, timeout: float) -> None:
        """End every sink, give them `timeout` seconds together to drain, then cancel them."""
        self.end()
        sinks, self._sinks = self._sinks, ()
        if sinks:
            await asyncio.gather(*(s.aclose(timeout) for s in sinks), return_exceptions=True)
