"""A resource's close is bounded and logs what goes wrong: a peer connection whose `close()`
raises or never returns, a task that failed. Nothing asserts on time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from livestream.webrtc import StreamNotFound, WebRTCHub
from livestream.webrtc.peers import Playback
from livestream.webrtc.sdp import OfferInfo

from .conftest import LOOPBACK

HANG_GUARD = 60.0
LOGGER = "livestream.webrtc.peers"
OFFER = OfferInfo(video=True, audio=False, h264=True, vp8=False, video_direction="recvonly", ice_ufrag="u")


class NoStreams:
    async def playback(self, stream: str) -> Playback:
        raise StreamNotFound(stream)

    async def publish(self, stream: str) -> Any:
        raise StreamNotFound(stream)


async def _with_resource(pc_close: Any, task_body: Any, caplog: pytest.LogCaptureFixture) -> WebRTCHub:
    hub = WebRTCHub(NoStreams(), LOOPBACK, close_timeout=0.2)
    pc = RTCPeerConnection()
    real_close = pc.close
    pc.close = pc_close  # type: ignore[method-assign]
    resource = hub._register("whep", "s", pc, OFFER)
    resource.tasks.append(asyncio.create_task(task_body(), name="whep-s-test"))
    await asyncio.sleep(0)  # the task starts
    before = asyncio.all_tasks()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        async with asyncio.timeout(HANG_GUARD):
            await hub.close()
    assert resource.closed and hub.resources("s") == []
    assert all(t.done() for t in resource.tasks)
    assert {t for t in before if not t.done()} - {asyncio.current_task()} == set()
    await real_close()
    return hub


async def test_a_peer_connection_whose_close_raises_is_logged_and_the_resource_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def close_raises() -> None:
        raise ConnectionError("transport already broken")

    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("failed while cancelled")

    await _with_resource(close_raises, fails_on_cancel, caplog)
    debug = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.DEBUG]
    assert any("closing the peer connection failed" in r.getMessage() and r.exc_info for r in debug)
    assert any("task whep-s-test failed" in r.getMessage() and r.exc_info for r in debug)


async def test_a_peer_connection_whose_close_never_returns_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    async def close_hangs() -> None:
        await asyncio.Event().wait()  # only the hub's bound ends it

    async def idle() -> None:
        await asyncio.Event().wait()

    await _with_resource(close_hangs, idle, caplog)
    assert "the peer connection did not close within 0.2 s; moving on" in caplog.text
