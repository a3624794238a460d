"""RTMP push: a connection's last steps never hang or fail silently, and nothing is left behind.

A destination played by the sans-IO `ServerConnection` on a loopback socket accepts the publish
(or drops the client); the sink is then closed while it waits for packets. Nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from livestream.rtmp.push import RtmpPushSink

from rtmp_destination import RtmpDestination

HANG_GUARD = 60.0
LOGGER = "livestream.rtmp.push"


@pytest.fixture
async def destination() -> AsyncIterator[RtmpDestination]:
    async with RtmpDestination() as dest:
        yield dest


def _tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_a_sink_stopped_while_waiting_for_packets_leaves_no_task(destination: RtmpDestination, how: str) -> None:
    before = _tasks()
    reports: list[str] = []
    sink = RtmpPushSink(destination.url(), min_backoff=30.0)
    async with asyncio.timeout(HANG_GUARD):
        sink.start(reports.append)
        await destination.published.wait()
        while not sink.connected:
            await asyncio.sleep(0.01)
        if how == "cancel":
            # Its task cancelled with no `end()` first (a session aborting): the wait for the
            # next packet must not outlive it.
            task = sink._task
            assert task is not None
            task.cancel()
            await asyncio.wait([task])
            await asyncio.sleep(0)
            assert _tasks() - before == set()
        await sink.aclose(0.0)  # no grace: the sink is cancelled in its idle wait for packets
        await asyncio.sleep(0)  # a cancelled task settles on the next loop turn
    assert reports == []
    assert _tasks() - before == set()


async def test_a_socket_close_that_raises_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def close_fails(self: asyncio.StreamWriter) -> None:
        raise ConnectionResetError("boom at close")

    monkeypatch.setattr(asyncio.StreamWriter, "wait_closed", close_fails)
    reports: list[str] = []
    async with RtmpDestination(drop=True) as dest:
        sink = RtmpPushSink(dest.url(), min_backoff=30.0)
        with caplog.at_level(logging.DEBUG, logger=LOGGER):
            async with asyncio.timeout(HANG_GUARD):
                sink.start(reports.append)
                while sink.failures < 1:
                    await asyncio.sleep(0.01)
                await sink.aclose(0.0)
    assert "failed: ConnectionResetError" in reports[0]  # the failure itself goes to the session
    assert "socket close failed: ConnectionResetError: boom at close" in caplog.text


async def test_an_unexpected_error_at_socket_close_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def close_fails(self: asyncio.StreamWriter) -> None:
        raise RuntimeError("not a socket error")

    monkeypatch.setattr(asyncio.StreamWriter, "wait_closed", close_fails)
    async with RtmpDestination(drop=True) as dest:
        sink = RtmpPushSink(dest.url(), min_backoff=30.0)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with asyncio.timeout(HANG_GUARD):
                sink.start(lambda message: None)
                while sink.failures < 1:
                    await asyncio.sleep(0.01)
                await sink.aclose(0.0)
    (record,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert "socket close failed" in record.getMessage()
    assert record.exc_info is not None and "not a socket error" in str(record.exc_info[1])
