"""The trickle server inside the engine app (under /ai/trickle/), and the standalone CLI."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import Any

import aiohttp
from trickle_helpers import get, post

from livestream.app import TRICKLE_BASE_PATH, build_app
from livestream.settings import Settings
from trickle import TRICKLE_SERVER_KEY, TricklePublisher, TrickleSubscriber


async def test_engine_mounts_trickle_with_autocreate_off(aiohttp_server: Any, http: aiohttp.ClientSession) -> None:
    app = build_app(Settings())
    server = await aiohttp_server(app)
    url = str(server.make_url(TRICKLE_BASE_PATH))
    refused = await post(http, url + "session-out/0", b"x")
    assert (refused.status, refused.body) == (404, b"Stream not found\n")  # trickle's own answer, not JSON
    assert refused.headers["Content-Type"].startswith("text/plain")
    app[TRICKLE_SERVER_KEY].create_channel("session-out", "video/MP2T")  # in-process, as sessions do
    async with TricklePublisher(url + "session-out", "video/MP2T", session=http) as publisher:
        async with publisher.segment() as segment:
            await segment.write(b"ts")
        reply = await get(http, url + "session-out/0")
        assert (reply.status, reply.body, reply.headers["Content-Type"]) == (200, b"ts", "video/MP2T")
        ahead = await get(http, url + "session-out/9")
        assert (ahead.status, ahead.body) == (470, b"Entry not found")


async def test_engine_trickle_autocreate_setting(aiohttp_server: Any, http: aiohttp.ClientSession) -> None:
    server = await aiohttp_server(build_app(Settings(trickle_autocreate=True)))
    url = str(server.make_url(TRICKLE_BASE_PATH))
    assert (await post(http, url + "made/0", b"x")).status == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_standalone_cli_server(http: aiohttp.ClientSession) -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livestream", "trickle-server", "--port", str(port), "--base-path", "/t/",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/t/cli"
        async with asyncio.timeout(20):
            while True:
                try:
                    await get(http, url + "/next")
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        async with TricklePublisher(url, "video/MP2T", session=http) as publisher:  # autocreate is on
            async with asyncio.timeout(10):
                while (await get(http, url + "/next")).status != 200:  # the preconnect created it
                    await asyncio.sleep(0.01)
            async with TrickleSubscriber(url, start_seq=0, session=http) as subscriber:
                async with publisher.segment() as segment:
                    await segment.write(b"over the wire")
                got = await asyncio.wait_for(subscriber.next_segment(), 10)
                assert got is not None and await got.read() == b"over the wire"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) is not None
