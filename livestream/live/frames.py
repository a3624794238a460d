"""The hop from the decoder thread to the pipeline: a bounded queue that drops the oldest frames.

The decoder thread puts frames without ever blocking; the session's process task awaits them.
The queue holds at most `max_frames` frames and at most `max_lag` seconds of stream time
(newest pts minus oldest pts). A segment that arrives in one burst fits whole, so nothing is
lost while the pipeline keeps up on average; a pipeline that is slower than the input loses
its oldest frames, which keeps latency bounded (live video favours latency over completeness).

A `direct` hand-off skips the loop: while the consumer waits with nothing queued (so nothing it
took is still on its way), `put` offers the frame to `direct(item)` (the session's pass-through
path: encoded at once on the decoder's thread, or handed to the encode thread); a frame it
takes never enters the queue. One thread puts (the ingest's). Frames keep their order: once one is queued, the next ones queue behind it until
the consumer has caught up and waits again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av

__all__ = ["FrameQueue", "InputFrame", "StreamEnded"]


class StreamEnded(Exception):
    """The queue was closed and is empty (end of the input stream)."""


@dataclass(slots=True)
class InputFrame:
    """A decoded video frame with the wall-clock time its bytes arrived (for latency figures)."""

    frame: av.VideoFrame
    pts: int
    time_base: Fraction
    arrival: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


class FrameQueue:
    """Thread-safe producer side, asyncio consumer side; counts what it drops."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_frames: int = 64,
        max_lag: float = 1.0,
        direct: Callable[[InputFrame], bool] | None = None,
    ) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self._loop = loop
        self.max_frames = max_frames
        self.max_lag = max_lag
        self._items: deque[InputFrame] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._closed = False
        #: The consumer waits for a wake-up (set and cleared under the lock): producers wake
        #: the loop once per wait, not once per frame (each wake-up is a syscall).
        self._waiting = False
        self._direct = direct
        self.put_count = 0
        #: Frames `direct` took (never queued).
        self.direct_count = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: InputFrame) -> None:
        """Add a frame (any thread). Never waits (though `direct` may encode it on the calling
        thread); drops the oldest frames beyond the bounds."""
        with self._lock:
            if self._closed:
                return
            self.put_count += 1
            direct = self._direct if self._waiting and not self._items else None
        # Outside the lock (a direct hand-off may encode): the consumer is idle and only a put
        # or close wakes it, so nothing can overtake this frame meanwhile.
        if direct is not None and direct(item):
            self.direct_count += 1
            return
        with self._lock:
            if self._closed:
                return
            self._items.append(item)
            newest = item.seconds
            while len(self._items) > self.max_frames or (
                len(self._items) > 1 and newest - self._items[0].seconds > self.max_lag
            ):
                self._items.popleft()
                self.dropped += 1
            wake, self._waiting = self._waiting, False
        if wake:
            self._wake()

    def close(self) -> None:
        """No more frames (any thread); the consumer drains what is queued, then sees `StreamEnded`."""
        with self._lock:
            self._closed = True
        self._wake()

    def clear(self) -> int:
        """Drop everything queued (counted as dropped); returns how many."""
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self.dropped += n
        return n

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    async def get_batch(self, max_items: int = 1) -> list[InputFrame]:
        """The oldest 1..max_items frames; raises `StreamEnded` once closed and drained."""
        while True:
            with self._lock:
                if self._items:
                    n = min(max_items, len(self._items))
                    return [self._items.popleft() for _ in range(n)]
                if self._closed:
                    raise StreamEnded
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()
