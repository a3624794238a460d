"""The gateway's local media store: files kept for a TTL, served at `/stream/{id}/{name}`.

go-livepeer's default store is in memory with relative URLs; ours writes to a folder (videos can
be large) and answers with absolute URLs (`public_url`, else the request's own scheme and host).
An S3-compatible store is not implemented.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalStore", "StoredFile"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class StoredFile:
    path: Path
    content_type: str


class LocalStore:
    def __init__(self, root: Path | None, ttl: float) -> None:
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="livestream-gateway-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        self._types: dict[str, tuple[str, float]] = {}

    def put(self, name: str, data: bytes, content_type: str) -> str:
        """Store `data`; returns its key `{id}/{name}` (the id is random and unguessable)."""
        if not _NAME.match(name):
            raise ValueError(f"bad stored file name {name!r}")
        key = f"{secrets.token_urlsafe(12)}/{name}"
        path = self.root / key
        path.parent.mkdir()
        path.write_bytes(data)
        self._types[key] = (content_type, time.monotonic() + self.ttl)
        return key

    def get(self, key: str) -> StoredFile | None:
        entry = self._types.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return StoredFile(self.root / key, entry[0])

    def sweep(self) -> int:
        """Delete the expired files; returns how many."""
        now = time.monotonic()
        expired = [k for k, (_, until) in self._types.items() if until < now]
        for key in expired:
            del self._types[key]
            shutil.rmtree(self.root / key.split("/", 1)[0], ignore_errors=True)
        return len(expired)

    @contextlib.asynccontextmanager
    async def running(self, interval: float = 30.0) -> AsyncIterator[LocalStore]:
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(min(interval, max(self.ttl, 0.05)))
                self.sweep()

        task = asyncio.create_task(sweeper(), name="gateway-store-sweeper")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._owned:
                shutil.rmtree(self.root, ignore_errors=True)
