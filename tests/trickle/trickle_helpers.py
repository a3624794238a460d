"""Helpers shared by the trickle tests (imported as a plain module; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from trickle import TrickleServer


@dataclass
class Served:
    server: TestServer
    trickle: TrickleServer
    base: str

    def url(self, channel: str = "ch") -> str:
        return f"{self.base}{channel}"


MakeServer = Callable[..., Awaitable[Served]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StreamingPost:
    """A `POST` whose chunked body the test feeds piece by piece."""

    def __init__(self, http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(http, url, headers or {}))

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if not chunk:
                return
            yield chunk

    async def _run(self, http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Reply:
        async with http.post(url, data=self._body(), headers=headers, expect100=True) as resp:
            return Reply(resp.status, resp.headers.copy(), await resp.read())

    def send(self, data: bytes) -> None:
        self._queue.put_nowait(data)

    async def finish(self) -> Reply:
        self._queue.put_nowait(b"")
        return await asyncio.wait_for(self.task, 10)

    async def cancel(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await self.task


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


async def request(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Reply:
    async with http.request(method, url, **kwargs) as resp:
        return Reply(resp.status, resp.headers.copy(), await resp.read())


async def post(http: aiohttp.ClientSession, url: str, data: bytes = b"", **kwargs: Any) -> Reply:
    return await request(http, "POST", url, data=data, **kwargs)


async def get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Reply:
    return await request(http, "GET", url, **kwargs)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
