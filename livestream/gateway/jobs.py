"""image-to-video with `Prefer: respond-async`: jobs run in the background, polled by id.

As go-livepeer: `POST /image-to-video/result {request_id}` answers 400 for an unknown id, 202
`{status: "processing"}` while it runs, and 200 `{status: "complete", result: {images, error?}}`.
Results are kept for the store's TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable
from typing import Any

__all__ = ["AsyncJobs"]


class AsyncJobs:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._results: dict[str, tuple[dict[str, Any] | None, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Awaitable[dict[str, Any]]) -> str:
        request_id = secrets.token_hex(16)
        self._results[request_id] = (None, time.monotonic() + self.ttl)

        async def run() -> None:
            try:
                result: dict[str, Any] = {"status": "complete", "result": await work}
            except Exception as exc:  # the error goes to the poller
                msg = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
                result = {"status": "complete", "result": {"images": [], "error": {"message": msg}}}
            self._results[request_id] = (result, time.monotonic() + self.ttl)

        task = asyncio.create_task(run(), name=f"gateway-job-{request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return request_id

    def poll(self, request_id: str) -> dict[str, Any] | None:
        """None: unknown (or expired) id; else the job's status."""
        now = time.monotonic()
        for key in [k for k, (_, until) in self._results.items() if until < now]:
            del self._results[key]
        entry = self._results.get(request_id)
        if entry is None:
            return None
        return entry[0] or {"status": "processing"}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
