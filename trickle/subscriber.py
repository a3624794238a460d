"""Subscribe to a trickle channel: one `GET {url}/{seq}` per segment, streamed as it is written.

    async with TrickleSubscriber(url) as subscriber:
        async for segment in subscriber:          # ends when the channel closes
            async for chunk in segment:           # bytes arrive while the publisher writes
                ...

After each segment's headers arrive, the GET for the next seq is opened in a task the
subscriber owns (a preconnect), so it waits on the server for the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType

import aiohttp

from .errors import (
    TrickleClientError,
    TrickleHTTPError,
    TrickleReadError,
    TrickleRetriesExhaustedError,
    TrickleStreamNotFoundError,
)
from .protocol import HEADER_LATEST, HEADER_SEQ, STATUS_SEQ_NOT_FOUND, header_int, is_closed

__all__ = ["TrickleSegment", "TrickleSubscriber"]

log = logging.getLogger(__name__)


class TrickleSegment:
    """One segment being received: an async iterator of byte chunks, or `await read()`."""

    def __init__(self, response: aiohttp.ClientResponse, seq: int) -> None:
        self._response = response
        self.seq = seq
        #: The server's live edge when this segment was served (None when it equals `seq`).
        self.latest = header_int(response.headers, HEADER_LATEST)
        self.mime_type = response.headers.get("Content-Type", "")

    def __repr__(self) -> str:
        return f"<TrickleSegment seq={self.seq}>"

    def __aiter__(self) -> TrickleSegment:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            self.release()
            raise TrickleReadError(f"segment {self.seq}: {exc!r}") from exc
        if not chunk:
            self.release()
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """The rest of the segment, once the publisher has finished it."""
        parts = [chunk async for chunk in self]
        return b"".join(parts)

    def release(self) -> None:
        """Stop reading this segment (drops the rest of its body)."""
        self._response.release()


class TrickleSubscriber:
    """Async context manager and async iterator of `TrickleSegment`s from channel `url`."""

    def __init__(
        self,
        url: str,
        *,
        start_seq: int = -1,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 5,
        retry_delay: float = 0.5,
        ahead_delay: float = 0.25,
    ) -> None:
        """
        Args:
            start_seq: first seq; -1 waits for the next segment, -2 replays the current one.
            max_retries: consecutive failed attempts (errors, 5xx, 470 resyncs) before
                `TrickleRetriesExhaustedError`; also how many times a seq ahead of the live
                edge is retried before jumping back to the edge.
            retry_delay: pause before retrying after an error.
            ahead_delay: pause before retrying a seq the server is not at yet (470, Latest < seq).
        """
        if start_seq < -2:
            raise ValueError(f"start_seq must be >= -2, got {start_seq}")
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.ahead_delay = ahead_delay
        self._given_session = session
        self._session = session
        self._seq = start_seq
        self._prefetch: tuple[int, asyncio.Task[aiohttp.ClientResponse]] | None = None
        self._current: TrickleSegment | None = None
        self._received = 0
        self._done = False
        #: Segments skipped by resyncs (a slow subscriber jumping to the live edge).
        self.skipped = 0

    async def __aenter__(self) -> TrickleSubscriber:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def next_seq(self) -> int:
        return self._seq

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("TrickleSubscriber is not started; use `async with` or `await start()`")
        return self._session

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    def __aiter__(self) -> TrickleSubscriber:
        return self

    async def __anext__(self) -> TrickleSegment:
        segment = await self.next_segment()
        if segment is None:
            raise StopAsyncIteration
        return segment

    async def set_seq(self, seq: int) -> None:
        """Read `seq` next (drops a preconnected GET)."""
        await self._drop_prefetch()
        self._seq = seq

    async def next_segment(self) -> TrickleSegment | None:
        """The next segment, or None once the channel has closed."""
        if self._done:
            return None
        await self.start()
        if self._current is not None:
            self._current.release()
            self._current = None
        attempts = 0
        waits_ahead = 0
        while not self._done:
            seq = self._seq
            try:
                response = await self._open(seq)
            except aiohttp.ClientSSLError as exc:
                # A certificate problem will not fix itself: no retries.
                self._done = True
                raise TrickleClientError(f"{self.url}: TLS failure: {exc}") from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                attempts = self._count_attempt(attempts, f"GET seq {seq}: {exc!r}")
                await asyncio.sleep(self.retry_delay)
                continue
            status = response.status
            if status == 200:
                if is_closed(response.headers):
                    response.release()
                    self._done = True
                    log.debug("%s: stream closed at seq %d", self.url, seq)
                    return None
                served = header_int(response.headers, HEADER_SEQ)
                served = served if served is not None else seq
                self._seq = served + 1
                self._received += 1
                self._start_prefetch(self._seq)
                self._current = TrickleSegment(response, served)
                return self._current
            body = (await response.text(errors="replace")).strip()
            response.release()
            if status == 404:
                self._done = True
                if self._received:
                    log.debug("%s: stream gone after %d segments", self.url, self._received)
                    return None
                raise TrickleStreamNotFoundError(f"{self.url}: stream not found")
            if status == STATUS_SEQ_NOT_FOUND:
                latest = header_int(response.headers, HEADER_LATEST)
                if latest is not None and seq >= 0 and latest < seq and waits_ahead < self.max_retries:
                    # Ahead of the live edge (e.g. the publisher restarted lower): give it a moment.
                    waits_ahead += 1
                    await asyncio.sleep(self.ahead_delay)
                    continue
                attempts = self._count_attempt(attempts, f"seq {seq} not found (latest {latest})")
                target = latest if latest is not None else -1
                if seq >= 0 and target > seq:
                    self.skipped += target - seq
                log.info("%s: seq %d not found; resyncing to %s", self.url, seq, target)
                self._seq = target
                continue
            if status < 500:
                self._done = True
                raise TrickleHTTPError(status, f"{self.url}/{seq}: HTTP {status} {body}")
            attempts = self._count_attempt(attempts, f"GET seq {seq}: HTTP {status} {body}")
            await asyncio.sleep(self.retry_delay)
        return None

    def _count_attempt(self, attempts: int, reason: str) -> int:
        attempts += 1
        if attempts > self.max_retries:
            self._done = True
            raise TrickleRetriesExhaustedError(f"{self.url}: {reason}; gave up after {self.max_retries} retries")
        log.debug("%s: %s (attempt %d)", self.url, reason, attempts)
        return attempts

    async def _open(self, seq: int) -> aiohttp.ClientResponse:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetched_seq, task = prefetch
            if prefetched_seq == seq:
                return await task
            await _cancel(task)
        return await self.session.get(f"{self.url}/{seq}", headers=self.headers)

    def _start_prefetch(self, seq: int) -> None:
        task = asyncio.create_task(self.session.get(f"{self.url}/{seq}", headers=self.headers), name=f"trickle-get-{seq}")
        self._prefetch = (seq, task)

    async def _drop_prefetch(self) -> None:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            await _cancel(prefetch[1])

    async def close(self) -> None:
        """Stop: release the current segment, cancel the preconnected GET. Idempotent."""
        self._done = True
        if self._current is not None:
            self._current.release()
            self._current = None
        await self._drop_prefetch()
        if self._given_session is None and self._session is not None:
            await self._session.close()
            self._session = None


async def _cancel(task: asyncio.Task[aiohttp.ClientResponse]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, OSError):
        response = await task
        response.release()

