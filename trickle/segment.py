"""One segment's bytes on the server: an append-only chunk list that many readers follow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["SegmentBuffer"]


class SegmentBuffer:
    """The bytes of segment `seq`, appended by publishers and read by any number of subscribers.

    Chunks are kept as the immutable `bytes` objects the publisher sent, so fan-out copies
    nothing. Each reader keeps its own chunk index; a reader always starts at byte 0. Appends
    after `close()` are still kept (go-livepeer does the same when two POSTs share a seq):
    readers already at the end miss them, later readers see them.
    """

    __slots__ = ("seq", "_chunks", "_size", "_closed", "_changed", "_on_close")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False
        self._changed: asyncio.Event | None = None
        self._on_close: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SegmentBuffer seq={self.seq} {state} {self._size} bytes in {len(self._chunks)} chunks>"

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def chunk_count(self) -> int:
        return len(self._chunks)

    def append(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()
        self._wake()

    def chunks_from(self, index: int) -> bytes:
        """Every byte from chunk `index` on, joined into one write (empty when caught up)."""
        chunks = self._chunks
        if index >= len(chunks):
            return b""
        if index == len(chunks) - 1:
            return chunks[index]
        return b"".join(chunks[index:])

    def data(self) -> bytes:
        return b"".join(self._chunks)

    async def wait_beyond(self, index: int) -> None:
        """Return once there are more than `index` chunks, or the segment is closed."""
        while index >= len(self._chunks) and not self._closed:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` once when the segment closes (a waiting publisher uses it)."""
        self._on_close.append(callback)

    def remove_close_callback(self, callback: Callable[[], None]) -> None:
        if callback in self._on_close:
            self._on_close.remove(callback)

    def _wake(self) -> None:
        # An Event per wake-up, created only when someone waits: readers each await their own
        # waiter inside Event.wait(), so one cancelled reader never disturbs the others.
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()
