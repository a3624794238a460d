"""A bounded byte pipe between `SegmentWriter.write()` and a chunked request body."""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["BodyPipe", "PipeAborted"]


class PipeAborted(Exception):
    """The request that consumed the pipe has ended; nothing more can be written."""


class BodyPipe:
    """One producer writes, the HTTP client reads. `put()` waits while `max_buffered` bytes are queued."""

    def __init__(self, max_buffered: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._max = max_buffered
        self._closed = False
        self._aborted = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.consumed = 0
        #: Set when the HTTP client first asks for body bytes (with `Expect: 100-continue`, once
        #: the server has answered `100 Continue`, i.e. has seen the request), or the request ended.
        self.started = asyncio.Event()

    def has_room(self) -> bool:
        return self._buffered < self._max and not self._aborted

    async def put(self, data: bytes) -> None:
        if self._aborted:
            raise PipeAborted
        if self._closed:
            raise RuntimeError("write after the segment was finished")
        while self._buffered >= self._max and not self._aborted:
            self._writable.clear()
            await self._writable.wait()
        if self._aborted:
            raise PipeAborted
        self._chunks.append(data)
        self._buffered += len(data)
        self._readable.set()

    def close(self) -> None:
        self._closed = True
        self._readable.set()

    def abort(self) -> None:
        self.started.set()
        self._aborted = True
        self._closed = True
        self._chunks.clear()
        self._readable.set()
        self._writable.set()

    def __aiter__(self) -> BodyPipe:
        return self

    async def __anext__(self) -> bytes:
        self.started.set()
        while not self._chunks:
            if self._closed:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        self.consumed += len(data)
        self._writable.set()
        return data
