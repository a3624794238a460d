"""Closing the tests' aiohttp servers without dropping a socket (shared by tests/gateway and
tests/liverunner).

asyncio (3.11) accepts a connection in one loop iteration and makes its transport in a task that
runs in the next; a task step queued before that one which closes the server (`runner.cleanup()`,
`TestServer.close()`) makes the transport's `Server._attach` fail, and the accepted socket is
dropped without being closed (a ResourceWarning, and a request left hanging). So: stop accepting
first, yield once, then close (tests/gateway/test_gateway_sockets.py makes the race happen)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import BaseTestServer

__all__ = ["close_test_server", "stop_accepting", "stop_runner"]


async def stop_accepting(runner: web.BaseRunner) -> None:
    """Stop `runner`'s sites accepting, and let the connections already accepted get their
    transports, before anything closes the servers: removing the listening sockets' readers stops
    new accepts; one `sleep(0)` lets the pending accept tasks (queued before this step's wake-up)
    attach, so the server's shutdown then closes them."""
    loop = asyncio.get_running_loop()
    for site in runner.sites:
        server = site._server
        if isinstance(server, asyncio.Server):
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)


async def stop_runner(runner: web.BaseRunner) -> None:
    """`runner.cleanup()` after `stop_accepting`: every socket of it closed."""
    await stop_accepting(runner)
    await runner.cleanup()


async def close_test_server(server: BaseTestServer) -> None:
    """`server.close()` (aiohttp's `TestServer`) after `stop_accepting`."""
    if server.runner is not None:
        await stop_accepting(server.runner)
    await server.close()
