"""Closing the tests' aiohttp servers without dropping a socket (shared by tests/gateway and
tests/liverunner): stop accepting first, yield once, then close, as
`livestream.server_close.stop_accepting` explains."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from livestream.server_close import stop_accepting as stop_accepting_servers

__all__ = ["close_test_server", "stop_accepting", "stop_runner"]


async def stop_accepting(runner: web.BaseRunner) -> None:
    """`livestream.server_close.stop_accepting` for the servers of `runner`'s sites."""
    await stop_accepting_servers([site._server for site in runner.sites if site._server is not None])


async def stop_runner(runner: web.BaseRunner) -> None:
    """`runner.cleanup()` after `stop_accepting`: every socket of it closed."""
    await stop_accepting(runner)
    await runner.cleanup()


async def close_test_server(server: BaseTestServer) -> None:
    """`server.close()` (aiohttp's `TestServer`) after `stop_accepting`."""
    if server.runner is not None:
        await stop_accepting(server.runner)
    await server.close()
