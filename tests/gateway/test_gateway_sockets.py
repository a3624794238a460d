"""Servers stop without dropping a socket: asyncio (3.11) accepts a connection in one loop
iteration and makes its transport in a task one step later; a server closed in between (by a
task step queued just before that one) fails the transport's `Server._attach`, and the accepted
socket is left open, unclosed (a ResourceWarning at collection, and a client left hanging).

Made to happen every time here: the client's connection waits in the kernel's backlog, and the
stop is queued to run just before the accept callback of the same loop iteration. The tests'
aiohttp servers stop with `stop_runner`, the RTMP server (the gateway's and the engine's ingest)
with its own `close()`; neither leaves a socket."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Awaitable, Callable

from aiohttp import web
from gateway_fleet import stop_runner

from livestream.rtmp.server import RtmpServer
from livestream.settings import Settings


async def stop_right_after_an_accept(port: int, stop: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    async def stopping() -> None:
        await stop()
        done.set_result(None)

    with socket.create_connection(("127.0.0.1", port)):  # in the backlog: readable at the next poll
        loop.call_soon(lambda: loop.create_task(stopping()))  # runs just before the accept callback
        await asyncio.wait_for(done, 10)


def resource_warnings(run: Callable[[], Awaitable[None]]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(run())  # type: ignore[arg-type]
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_an_aiohttp_runner_stopped_with_stop_runner_leaves_no_socket() -> None:
    async def run() -> None:
        runner = web.AppRunner(web.Application(), shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        await stop_right_after_an_accept(server.sockets[0].getsockname()[1], lambda: stop_runner(runner))

    assert resource_warnings(run) == []


def test_the_rtmp_server_closes_every_socket_it_accepted() -> None:
    async def run() -> None:
        rtmp = RtmpServer(object(), Settings(host="127.0.0.1"), port=0, idle_timeout=2.0)  # type: ignore[arg-type]
        await rtmp.start()
        await stop_right_after_an_accept(rtmp.port, rtmp.close)

    assert resource_warnings(run) == []
