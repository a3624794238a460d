"""Closing an asyncio server without dropping a connection it has just accepted.

asyncio (3.11) accepts a connection in one loop iteration and makes its transport in a task that
runs in the next. If the server closes in between, the transport's attach to the server fails
and the accepted socket is dropped unclosed (a ResourceWarning, and a client left hanging). So:
stop accepting first, yield once so the pending accepts attach, then close; the close then ends
those connections like the others (tests/gateway/test_gateway_sockets.py makes the race happen).
"""

from __future__ import annotations

import asyncio

__all__ = ["stop_accepting"]


async def stop_accepting(servers: list[asyncio.AbstractServer]) -> None:
    """Stop `servers` accepting and let the connections already accepted get their transports;
    the caller closes the servers after this."""
    loop = asyncio.get_running_loop()
    for server in servers:
        if isinstance(server, asyncio.Server):
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)
