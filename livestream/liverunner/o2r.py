"""The orchestrator→runner (O2R) channel: one JSON object per trickle segment.

    {"keep": "alive"}                                        every 10 s
    {"event": "reserved", "session": "...", "timestamp": ...}
    {"event": "released", "session": "...", "timestamp": ...}

The orchestrator's queue drops events when full and keeps 5 segments, so events are a fast path
only: the heartbeat's `session_ids` are the truth (`RunnerSessions.reconcile`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from trickle import TrickleError, TrickleHTTPError, TrickleStreamNotFoundError, TrickleSubscriber

__all__ = ["O2RReader"]

log = logging.getLogger(__name__)


class O2RReader:
    """Reads one registration's O2R channel until cancelled or the channel is gone.

    `on_event(message)` gets each event; `on_gone()` is called once when the channel no longer
    exists (404, or closed by the orchestrator): the registration is gone.
    """

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        on_event: Callable[[dict[str, Any]], Awaitable[None]],
        on_gone: Callable[[], None],
        retry_delay: float = 1.0,
    ) -> None:
        self.url = url
        self._http = http
        self._on_event = on_event
        self._on_gone = on_gone
        self._retry_delay = retry_delay
        #: `time.monotonic()` of the last message (keepalives included); None before the first.
        self.last_message: float | None = None
        self.messages = 0

    async def run(self) -> None:
        seq = 0
        while True:
            try:
                async with TrickleSubscriber(self.url, start_seq=seq, session=self._http) as sub:
                    async for segment in sub:
                        data = await segment.read()
                        seq = segment.seq + 1
                        await self._handle(data)
                log.info("O2R channel %s closed by the orchestrator: the registration is gone", _short(self.url))
                self._on_gone()
                return
            except TrickleStreamNotFoundError:
                log.warning("O2R channel %s not found (404): the registration is gone", _short(self.url))
                self._on_gone()
                return
            except TrickleHTTPError as exc:
                if exc.status == 404:
                    self._on_gone()
                    return
                log.warning("O2R channel %s: %s; reading again in %.1f s", _short(self.url), exc, self._retry_delay)
            except (TrickleError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                # Unreachable orchestrator: the heartbeat loop backs off and re-registers as needed.
                log.info("O2R channel %s: %r; reading again in %.1f s", _short(self.url), exc, self._retry_delay)
            await asyncio.sleep(self._retry_delay)

    async def _handle(self, data: bytes) -> None:
        self.last_message = time.monotonic()
        self.messages += 1
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("O2R: not JSON, ignored: %r", data[:200])
            return
        if not isinstance(message, dict):
            log.warning("O2R: not a JSON object, ignored: %r", message)
            return
        if message.get("keep") == "alive":
            return
        if message.get("event") in ("reserved", "released") and isinstance(message.get("session"), str):
            log.debug("O2R: %s %s", message["event"], message["session"])
            await self._on_event(message)
        else:
            log.debug("O2R: unknown message ignored: %r", message)


def _short(url: str) -> str:
    """The channel URL without its secret part (the name is a credential): for logs."""
    base, _, name = url.rstrip("/").rpartition("/")
    return f"{base}/{name.split('-', 1)[0]}-…-o2r" if name.endswith("-o2r") else f"{base}/…"
