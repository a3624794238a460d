"""image-to-video with `Prefer: respond-async`: jobs run in the background, polled by id.

As go-livepeer: `POST /image-to-video/result {request_id}` answers 400 for an unknown id, 202
`{status: "processing"}` while it runs, and 200 `{status: "complete", result: {images, error?}}`.

Each job's record is kept in the media store (go-livepeer keeps `request.json`/`result.json` in
its object store), so with a persistent store (`storage_dir`, or an object store) a result
outlives a gateway restart and any gateway on a shared object store answers the poll. A record
says which gateway process runs the job and is touched every `HEARTBEAT` seconds while it runs:
a "processing" record not touched for `LOST_AFTER` seconds belongs to a gateway that stopped,
and is answered as complete with an error. Records are kept for the store's TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any

from .storage import MediaStore

__all__ = ["AsyncJobs"]

log = logging.getLogger(__name__)

#: Seconds between two touches of a running job's record.
HEARTBEAT = 30.0
#: A running job's record untouched this long: its gateway stopped.
LOST_AFTER = 3 * HEARTBEAT


class AsyncJobs:
    def __init__(self, store: MediaStore, heartbeat: float = HEARTBEAT) -> None:
        self.store = store
        self.heartbeat = heartbeat
        #: This gateway process: the owner of the jobs it runs.
        self.owner = secrets.token_hex(8)
        self._tasks: set[asyncio.Task[None]] = set()

    def _processing(self) -> dict[str, Any]:
        return {"status": "processing", "owner": self.owner, "updated": time.time()}

    async def start(self, work: Awaitable[dict[str, Any]]) -> str:
        request_id = secrets.token_hex(16)
        await self.store.put_record(request_id, self._processing())

        async def touch() -> None:
            while True:
                await asyncio.sleep(self.heartbeat)
                with contextlib.suppress(Exception):
                    await self.store.put_record(request_id, self._processing())

        async def run() -> None:
            toucher = asyncio.create_task(touch())
            try:
                result: dict[str, Any] = {"status": "complete", "result": await work}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the error goes to the poller
                msg = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
                result = {"status": "complete", "result": {"images": [], "error": {"message": msg}}}
            finally:
                toucher.cancel()
            try:
                await self.store.put_record(request_id, result)
            except Exception:
                log.exception("image-to-video job %s: could not store its result", request_id)

        task = asyncio.create_task(run(), name=f"gateway-job-{request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return request_id

    async def poll(self, request_id: str) -> dict[str, Any] | None:
        """None: unknown (or expired) id; else the job's status, as the client sees it."""
        record = await self.store.get_record(request_id)
        if record is None:
            return None
        if record.get("status") != "processing":
            return record
        updated = record.get("updated")
        lost_after = max(LOST_AFTER, 3 * self.heartbeat)
        if record.get("owner") != self.owner and isinstance(updated, (int, float)) and time.time() - updated > lost_after:
            msg = "the gateway running this job stopped before it finished"
            return {"status": "complete", "result": {"images": [], "error": {"message": msg}}}
        return {"status": "processing"}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
