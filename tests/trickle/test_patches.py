"""`trickle.aiohttp_patches`: the aiohttp behaviour the trickle server relies on is still there,
and an aiohttp outside the supported range is refused loudly."""

from __future__ import annotations

import asyncio
import inspect
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web, web_urldispatcher
from aiohttp.test_utils import make_mocked_request
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from trickle import TrickleServer, TrickleServerConfig, aiohttp_patches
from trickle.aiohttp_patches import (
    SUPPORTED_AIOHTTP,
    BodyInterrupted,
    HeldHeadersResponse,
    UnsupportedVersionError,
    check_aiohttp_version,
    interrupt_body,
    send_continue,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.fixture
def fresh_check() -> Iterator[None]:
    check_aiohttp_version.cache_clear()
    yield
    check_aiohttp_version.cache_clear()


def test_installed_aiohttp_is_supported_and_pinned_alike(fresh_check: None) -> None:
    check_aiohttp_version()
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {r.name: r.specifier for r in map(Requirement, dependencies)}
    assert pins["aiohttp"] == SpecifierSet(SUPPORTED_AIOHTTP)


def test_an_unsupported_aiohttp_is_refused_at_setup(fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiohttp_patches, "version", lambda package: "3.15.0")
    with pytest.raises(UnsupportedVersionError, match=r"aiohttp 3\.15\.0 is installed.*aiohttp>=3\.14,<3\.15"):
        TrickleServer(TrickleServerConfig()).setup(web.Application())


def _mock_writer() -> mock.Mock:
    writer = mock.Mock()
    writer.write_headers = mock.AsyncMock()
    writer.write = mock.AsyncMock()
    return writer


@pytest.mark.parametrize(("response_class", "sent_at_prepare"), [(web.StreamResponse, 1), (HeldHeadersResponse, 0)])
async def test_held_headers_wait_for_the_body(response_class: type[web.StreamResponse], sent_at_prepare: int) -> None:
    writer = _mock_writer()
    await response_class().prepare(make_mocked_request("GET", "/", writer=writer))
    assert writer.write_headers.await_count == 1  # buffered in the writer...
    assert writer.send_headers.call_count == sent_at_prepare  # ...and flushed on their own only if asked


async def test_interim_continue_goes_to_the_request_writer() -> None:
    # aiohttp's own expect handler sends its single 100 Continue the same way.
    assert 'request.writer.write(b"HTTP/1.1 100 Continue\\r\\n\\r\\n")' in inspect.getsource(
        web_urldispatcher._default_expect_handler
    )
    writer = _mock_writer()
    request = make_mocked_request("POST", "/", writer=writer)
    await send_continue(request)
    await send_continue(request)
    assert writer.write.await_args_list == [mock.call(b"HTTP/1.1 100 Continue\r\n\r\n")] * 2


async def test_an_interrupted_body_ends_the_request_quietly(aiohttp_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The handler stops waiting for a body that never comes, answers, and aiohttp's lingering
    drain takes the same exception as the body's end: the connection closes, nothing is logged."""
    waiting: asyncio.Future[web.Request] = asyncio.get_running_loop().create_future()
    outcome: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        waiting.set_result(request)
        try:
            await request.content.readany()
        except BodyInterrupted:
            outcome.append("interrupted")
        return web.Response(text="done", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_post("/", handler)
    server = await aiohttp_server(app)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    interrupt_body(await asyncio.wait_for(waiting, 5))
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closed the connection
    writer.close()
    await writer.wait_closed()
    assert outcome == ["interrupted"]
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"done")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
