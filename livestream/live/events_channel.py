"""A session's events channel: status, error, restart and trace events, published in order.

    async with EventsChannel(url, http, stream_id=..., max_pending=64) as events:
        events.emit(event)                     # never blocks; the oldest is dropped when full
    # on exit: what is queued is sent (at most `drain_timeout`), then the task ends

Without a URL (a direct stream) events are only kept in `recent` for the API.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import aiohttp

from trickle import TrickleClientError, TrickleError, TricklePublisher, TrickleStreamNotFoundError

from .events import STREAM_EVENTS, encode_event

__all__ = ["EventsChannel"]

log = logging.getLogger(__name__)


class EventsChannel:
    """Owns the events publisher task; see the module docstring."""

    def __init__(
        self, url: str, http: aiohttp.ClientSession, *, max_pending: int = 64, drain_timeout: float = 3.0
    ) -> None:
        self.url = url
        self._http = http
        self.max_pending = max_pending
        self.drain_timeout = drain_timeout
        self._queue: deque[tuple[dict[str, Any], str] | None] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)

    async def __aenter__(self) -> EventsChannel:
        if self.url:
            self._task = asyncio.create_task(self._publish(), name=f"live-events-{self.url[-24:]}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._queue.append(None)
        self._ready.set()
        done, _ = await asyncio.wait([task], timeout=self.drain_timeout)
        if not done:
            log.warning("events channel %s: %d event(s) unsent after %.1f s", self.url, len(self._queue), self.drain_timeout)
            task.cancel()
            await asyncio.wait([task], timeout=self.drain_timeout)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("events channel %s failed: %r", self.url, task.exception())

    def emit(self, event: dict[str, Any], queue_event_type: str = STREAM_EVENTS) -> None:
        self.recent.append(event)
        if not self.url:
            return
        if len(self._queue) >= self.max_pending:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((event, queue_event_type))
        self._ready.set()

    async def _publish(self) -> None:
        try:
            async with TricklePublisher(self.url, "application/json", session=self._http) as publisher:
                while True:
                    while not self._queue:
                        self._ready.clear()
                        await self._ready.wait()
                    item = self._queue.popleft()
                    if item is None:
                        return
                    event, kind = item
                    try:
                        async with publisher.segment() as seg:
                            await seg.write(encode_event(event, kind))
                    except TrickleClientError as exc:
                        log.info("events channel %s: %s", self.url, exc)
                        if isinstance(exc, TrickleStreamNotFoundError):
                            return
        except TrickleError as exc:
            log.info("events channel %s closed: %s", self.url, exc)
