"""`--pipeline live-video-to-video`'s preload: bounded by `pipeline_load_timeout`, never a hang.

A load that never returns turns `/health` into ERROR once its bound runs out, with a log; the
manager then closes without waiting for it, and logs the thread it abandons. The counting
helpers of `test_no_leaks` check that nothing else is left. Nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from livestream.live import SessionConfig
from livestream.live.manager import LIVE_TASK, SessionManager
from livestream.settings import Settings
from pipelines.live import LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams, NoopPipeline

from live_helpers import TEST_CONFIG, wait_for
from test_no_leaks import HANG_GUARD, Snapshot

LOGGER = "livestream.live.manager"


class _Gate:
    """Holds `load` until released; counts loads and closes."""

    def __init__(self) -> None:
        self.in_load = threading.Event()
        self.release = threading.Event()
        self.loads = 0
        self.closes = 0


GATE = _Gate()


class HangingLoad(NoopPipeline):
    name = "hanging-load"

    def load(self, params: Any) -> None:
        GATE.loads += 1
        GATE.in_load.set()
        GATE.release.wait()  # no timeout of its own: only the test ends it

    def close(self) -> None:
        GATE.closes += 1


class QuickLoad(NoopPipeline):
    name = "quick-load"

    def load(self, params: Any) -> None:
        GATE.loads += 1

    def close(self) -> None:
        GATE.closes += 1


@pytest.fixture
def gate() -> Iterator[_Gate]:
    global GATE
    GATE = _Gate()
    try:
        yield GATE
    finally:
        GATE.release.set()  # never leave a test thread blocked


def _manager(cls: type[NoopPipeline], config: SessionConfig) -> SessionManager:
    registry = default_live_registry()
    registry.register(LivePipelineSpec(cls.name, NoopParams, cls, "a preload test pipeline"))
    settings = Settings(pipeline=LIVE_TASK, model_id=cls.name)
    return SessionManager(settings, registry=registry, config=config)


def _preload_thread(before: Snapshot) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t not in before.threads]
    return thread


async def test_a_preload_that_hangs_reports_error_after_its_bound_and_the_manager_closes(
    gate: _Gate, caplog: pytest.LogCaptureFixture
) -> None:
    before = Snapshot.take()
    manager = _manager(HangingLoad, replace(TEST_CONFIG, pipeline_load_timeout=0.3))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with asyncio.timeout(HANG_GUARD):
            async with manager:
                await wait_for(gate.in_load.is_set)
                thread = _preload_thread(before)
                assert thread.daemon and thread.name == "live-preload"
                await wait_for(lambda: manager.health == "ERROR")
                assert "load stuck for 0.3 s on thread live-preload" in caplog.text
                assert thread.is_alive()  # still in `load`: abandoned, not waited for
    assert "preload thread live-preload is still loading at shutdown; it is abandoned" in caplog.text
    # Released, the abandoned load returns and closes what it loaded; nothing else is left.
    gate.release.set()
    thread.join(30)
    assert gate.loads == gate.closes == 1
    before.assert_nothing_leaked()


async def test_a_manager_closed_during_its_preload_does_not_wait_for_it(
    gate: _Gate, caplog: pytest.LogCaptureFixture
) -> None:
    before = Snapshot.take()
    manager = _manager(HangingLoad, TEST_CONFIG)  # the default bound: far away
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with asyncio.timeout(HANG_GUARD):
            async with manager:
                await wait_for(gate.in_load.is_set)
                assert manager.health == "LOADING"
                thread = _preload_thread(before)
    assert "still loading at shutdown; it is abandoned" in caplog.text
    gate.release.set()
    thread.join(30)
    assert gate.loads == gate.closes == 1
    before.assert_nothing_leaked()


async def test_a_preload_that_loads_leaves_idle_health_and_no_thread(gate: _Gate, caplog: pytest.LogCaptureFixture) -> None:
    before = Snapshot.take()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with asyncio.timeout(HANG_GUARD):
            async with _manager(QuickLoad, TEST_CONFIG) as manager:
                await wait_for(lambda: manager.health != "LOADING")
                assert manager.health == "IDLE"
    assert gate.loads == gate.closes == 1
    assert "abandoned" not in caplog.text
    before.assert_nothing_leaked()
