"""A session's params: the latest-wins slot, the control channel, and applying between batches.

Params arrive from the control channel (full sets, ai-runner's contract) or the API (patches
merged into the current set). Only the latest pending set is applied, by the pipeline stage
between two batches; sets that arrive meanwhile coalesce into it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from pipelines.base import LiveParams

from trickle import TrickleError, TrickleSubscriber

from .control import ControlError, merge_params, parse_control
from .events import now_ms

__all__ = ["SessionParams"]

log = logging.getLogger(__name__)

#: Seconds between attempts to (re)subscribe to a control channel that failed.
CONTROL_RETRY = 1.0


class SessionParams:
    """The current and pending params of one session."""

    def __init__(
        self,
        current: LiveParams,
        model: type[LiveParams],
        *,
        apply: Callable[[LiveParams], Awaitable[None]],
        report: Callable[[str], None],
    ) -> None:
        self.current = current
        self.model = model
        self._apply = apply
        self._report = report
        self._pending: LiveParams | None = None
        self._ready = asyncio.Event()
        self.control_messages = 0
        self.coalesced = 0
        self.last_update_time: int | None = None
        #: False until the current params went out in a status event.
        self.reported = False

    def set(self, params: LiveParams) -> None:
        """Queue a validated full set; only the latest is applied."""
        if self._pending is not None:
            self.coalesced += 1
        self._pending = params
        self._ready.set()

    def patch(self, patch: dict[str, Any]) -> LiveParams:
        """Merge `patch` into the current (or pending) params and queue them; raises `ControlError`."""
        params = merge_params(self._pending or self.current, patch)
        self.set(params)
        return params

    async def apply_loop(self) -> None:
        """Applies the latest pending set, for as long as the session runs."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            params, self._pending = self._pending, None
            if params is None:
                continue
            try:
                await self._apply(params)
            except Exception as exc:
                self._report(f"params rejected by the pipeline: {exc}")
                continue
            self.current = params
            self.last_update_time = now_ms()
            self.reported = False

    async def follow_control(self, url: str, http: aiohttp.ClientSession) -> None:
        """Read param sets from the control channel until it closes."""
        while True:
            try:
                # From the oldest retained message: replaying is harmless (each one is a full
                # param set and the latest wins), and joining at the live edge could miss the
                # params sent just before we subscribed.
                async with TrickleSubscriber(url, start_seq=0, session=http) as sub:
                    async for segment in sub:
                        self._on_control(await segment.read())
                return  # the control channel closed
            except TrickleError as exc:
                log.info("control channel %s: %s; retrying", url, exc)
                await asyncio.sleep(CONTROL_RETRY)

    def _on_control(self, data: bytes) -> None:
        try:
            params = parse_control(data, self.model)
        except ControlError as exc:
            self._report(f"control message rejected: {exc}")
            return
        if params is None:
            return
        self.control_messages += 1
        self.set(params)
