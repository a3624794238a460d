"""Nothing hangs, nothing leaks: a stuck pipeline, a failing close, a start cut short.

Each test counts the process's threads (`threading.enumerate`), asyncio tasks and open file
descriptors (`/proc/self/fd`) before and after, and every scenario must end (a hang guard of
`asyncio.timeout` fails the test by name rather than hanging the run). Bounds come from a
short `pipeline_call_timeout` in the test's `SessionConfig`; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from livestream.app import build_app
from livestream.ingest import FrameTarget, Ingest
from livestream.live import LIVE_CONFIG_KEY, LIVE_REGISTRY_KEY, SessionConfig
from livestream.live.session import Session, StartRequest
from livestream.settings import Settings
from pipelines.live import LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams, NoopPipeline

from live_helpers import TEST_CONFIG, numbered_frame, wait_for

CONFIG = replace(TEST_CONFIG, pipeline_call_timeout=0.3, pipeline_load_timeout=0.5, stop_timeout=2.0)
HANG_GUARD = 60.0


# --- counting ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    threads: set[threading.Thread]
    tasks: set[asyncio.Task[Any]]
    fds: int

    @staticmethod
    def take() -> Snapshot:
        return Snapshot(set(threading.enumerate()), asyncio.all_tasks(), len(os.listdir("/proc/self/fd")))

    def extra_threads(self) -> list[threading.Thread]:
        extra = [t for t in threading.enumerate() if t not in self.threads]
        # A thread pool's worker ends on its own shortly after its executor's shutdown; give
        # the ones that are ending a bounded join before counting them as leaked.
        for thread in extra:
            thread.join(5.0)
        return [t for t in threading.enumerate() if t not in self.threads]

    def assert_nothing_leaked(self) -> None:
        assert self.extra_threads() == []
        extra_tasks = asyncio.all_tasks() - self.tasks - {asyncio.current_task()}
        assert extra_tasks == set()
        assert len(os.listdir("/proc/self/fd")) <= self.fds


# --- pipelines --------------------------------------------------------------------------


@dataclass
class Probe:
    """What the test pipelines saw (one instance per test)."""

    loads: int = 0
    closes: int = 0
    in_process: threading.Event = field(default_factory=threading.Event)
    in_load: threading.Event = field(default_factory=threading.Event)
    #: Holds a blocked `process` (or `load`); set by the test or by `close`.
    release: threading.Event = field(default_factory=threading.Event)


class _Base(NoopPipeline):
    passthrough = False
    probe = Probe()

    def load(self, params: Any) -> None:
        type(self).probe.loads += 1

    def close(self) -> None:
        type(self).probe.closes += 1


class StuckUntilClosed(_Base):
    """`process` blocks (no timeout of its own) until `close` releases it."""

    name = "stuck-until-closed"

    def process(self, frames: Any) -> Any:
        self.probe.in_process.set()
        self.probe.release.wait()
        return frames

    def close(self) -> None:
        super().close()
        self.probe.release.set()


class StuckForGood(_Base):
    """`process` blocks until the test itself releases it; `close` does not help."""

    name = "stuck-for-good"

    def process(self, frames: Any) -> Any:
        self.probe.in_process.set()
        self.probe.release.wait()
        return frames


class RaisesOnClose(_Base):
    name = "raises-on-close"

    def process(self, frames: Any) -> Any:
        return frames

    def close(self) -> None:
        super().close()
        raise RuntimeError("close failed")


class SlowLoad(_Base):
    """`load` blocks until released: a session can be cancelled in the middle of it."""

    name = "slow-load"

    def load(self, params: Any) -> None:
        super().load(params)
        self.probe.in_load.set()
        self.probe.release.wait()

    def process(self, frames: Any) -> Any:
        return frames


@pytest.fixture
def probe() -> Iterator[Probe]:
    probe = _Base.probe = Probe()
    try:
        yield probe
    finally:
        probe.release.set()  # never leave a test thread blocked


def _spec(cls: type[_Base]) -> LivePipelineSpec:
    return LivePipelineSpec(cls.name, NoopParams, cls, "a leak test pipeline")


class Frames(Ingest):
    """64x64 frames at a steady pace until stopped (or `count` frames, then the end)."""

    name = "frames"

    def __init__(self, count: int = 10_000) -> None:
        self.count = count
        self._stop = asyncio.Event()

    async def run(self, target: FrameTarget) -> None:
        for n in range(self.count):
            if self._stop.is_set():
                return
            target.on_input()
            target.put_video(numbered_frame(n))
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()

    def abort(self) -> None:
        self._stop.set()


async def _run_session(spec: LivePipelineSpec, http: aiohttp.ClientSession, ingest: Ingest) -> Session:
    request = StartRequest(stream_id=f"leak-{spec.name}", subscribe_url="", publish_url="")
    async with asyncio.timeout(HANG_GUARD):
        async with Session(request, spec, CONFIG, http, ingest=ingest) as session:
            await session.run()
    return session


def _errors(session: Session) -> list[str]:
    return [str(e.get("message", "")) for e in session.recent_events if e.get("type") == "error"]


# --- tests ------------------------------------------------------------------------------


async def test_a_pipeline_stuck_in_process_ends_its_session_with_an_error(probe: Probe) -> None:
    async with aiohttp.ClientSession() as http:
        before = Snapshot.take()
        session = await _run_session(_spec(StuckUntilClosed), http, Frames())
        assert probe.in_process.is_set()
        assert session.error is not None and "pipeline call stuck for" in session.error
        assert any("stuck" in message for message in _errors(session))
        assert probe.closes == 1  # on a fresh thread: the stage thread was the stuck one
        before.assert_nothing_leaked()


async def test_a_thread_stuck_for_good_is_left_as_a_logged_daemon(probe: Probe, caplog: pytest.LogCaptureFixture) -> None:
    async with aiohttp.ClientSession() as http:
        before = Snapshot.take()
        with caplog.at_level(logging.ERROR, logger="livestream.live.pipeline_stage"):
            session = await _run_session(_spec(StuckForGood), http, Frames())
        assert session.error is not None and "stuck" in session.error
        assert probe.closes == 1
        (abandoned,) = [t for t in threading.enumerate() if t not in before.threads]
        assert abandoned.daemon and abandoned.name.startswith("live-pipeline-")
        assert f"thread {abandoned.name} is stuck in a pipeline call" in caplog.text
        assert "left behind as a daemon thread" in caplog.text
        # Released, the abandoned thread ends by itself: nothing else is left.
        probe.release.set()
        abandoned.join(30)
        before.assert_nothing_leaked()


async def test_a_pipeline_that_raises_in_close_is_logged_and_the_session_ends(
    probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        before = Snapshot.take()
        with caplog.at_level(logging.ERROR, logger="livestream.live.pipeline_stage"):
            session = await _run_session(_spec(RaisesOnClose), http, Frames(count=20))
        assert session.error is None and session.frames_out > 0
        assert probe.closes == 1
        assert "close() failed" in caplog.text and "close failed" in caplog.text
        before.assert_nothing_leaked()


async def test_a_session_cancelled_during_its_pipeline_load_closes_what_it_loaded(probe: Probe) -> None:
    async with aiohttp.ClientSession() as http:
        before = Snapshot.take()
        task = asyncio.create_task(_run_session(_spec(SlowLoad), http, Frames()))
        await wait_for(probe.in_load.is_set)
        task.cancel()
        probe.release.set()  # the load finishes after its session was cancelled
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(HANG_GUARD):
                await task
        assert probe.loads == 1 and probe.closes == 1
        before.assert_nothing_leaked()


async def test_a_session_cancelled_during_a_stuck_load_ends_and_the_late_load_is_closed(probe: Probe) -> None:
    async with aiohttp.ClientSession() as http:
        before = Snapshot.take()
        task = asyncio.create_task(_run_session(_spec(SlowLoad), http, Frames()))
        await wait_for(probe.in_load.is_set)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(HANG_GUARD):
                await task  # close() gave up on the stuck thread (bounded) and logged it
        assert probe.closes == 0
        (abandoned,) = [t for t in threading.enumerate() if t not in before.threads]
        probe.release.set()  # the load finishes: the stage closed meanwhile, so it closes it
        abandoned.join(30)
        assert probe.closes == 1
        before.assert_nothing_leaked()


async def test_a_client_that_disconnects_during_post_start_leaves_nothing_behind(probe: Probe) -> None:
    registry = default_live_registry()
    registry.register(_spec(SlowLoad))
    before = Snapshot.take()
    app = build_app(Settings(host="127.0.0.1", port=0))
    app[LIVE_CONFIG_KEY] = CONFIG
    app[LIVE_REGISTRY_KEY] = registry
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        # Headers promise a body that never comes whole: the client goes away mid-request.
        reader, writer = await asyncio.open_connection(client.host, client.port)
        body = b'{"subscribe_url": "http://127.0.0.1:9/in", "publish_url": "http://127.0.0.1:9/out", "model_id": "slow-load"}'
        writer.write(
            b"POST /live-video-to-video HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body) + 100}\r\n\r\n".encode()
            + body[:40]
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        # A full start of the slow-loading pipeline, then the engine shuts down mid-load.
        response = await client.post("/live-video-to-video", json={
            "subscribe_url": "http://127.0.0.1:9/in",
            "publish_url": "http://127.0.0.1:9/out",
            "model_id": "slow-load",
            "stream_id": "mid-load",
        })
        assert response.status == 200, await response.text()
        await wait_for(probe.in_load.is_set)
        probe.release.set()
    finally:
        async with asyncio.timeout(HANG_GUARD):
            await client.close()
    assert probe.loads == probe.closes == 1
    before.assert_nothing_leaked()
