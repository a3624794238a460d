"""A cheap CPU pipeline (`runs_inline`) runs on the stream's decoder thread while the session is
idle, and goes back to its own thread when an inline call fails or is slow: either way every
frame comes out, in order, processed."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, ClassVar

from livestream.ingest import FrameTarget, Ingest
from livestream.live import SessionConfig, SessionManager
from livestream.live.testsrc import read_number
from livestream.settings import Settings
from pipelines.live import LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams, RgbNoopPipeline

from live_helpers import CollectSink, numbered_frame

CONFIG = SessionConfig(status_interval=0.25, input_timeout=5.0, stop_timeout=5.0, max_restarts=1, max_queue_lag=5.0, max_queue_frames=256)
FRAMES = 45
DECODER = "test-decode"


class ThreadIngest(Ingest):
    """Numbered 64x64 frames at ~30 fps from a thread of its own, as a decoder thread puts them."""

    name = "thread"

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self._stop = threading.Event()

    async def run(self, target: FrameTarget) -> None:
        def produce() -> None:
            for n in range(self.frames):
                if self._stop.is_set():
                    return
                target.on_input()
                target.put_video(numbered_frame(n))
                time.sleep(1 / 30)

        thread = threading.Thread(target=produce, name=DECODER, daemon=True)
        thread.start()
        await asyncio.to_thread(thread.join, 30)

    def stop(self) -> None:
        self._stop.set()

    def abort(self) -> None:
        self._stop.set()


class Invert(RgbNoopPipeline):
    """Inverts each frame and notes the thread of every call; `fail_inline` raises on the first
    call made on the decoder's thread, `slow` sleeps past the inline budget."""

    name: ClassVar[str] = "invert-inline"
    fail_inline: ClassVar[bool] = False
    slow: ClassVar[bool] = False

    def __init__(self) -> None:
        self.threads: list[str] = []
        self._failed = False

    def process(self, frames: Any) -> Any:
        here = threading.current_thread().name
        self.threads.append(here)
        if self.fail_inline and here == DECODER and not self._failed:
            self._failed = True
            raise RuntimeError("inline trouble")
        if self.slow:
            time.sleep(0.03)
        return 255 - frames


async def _run(pipeline: type[Invert]) -> tuple[list[int], list[str], dict[str, Any]]:
    made: list[Invert] = []

    def factory() -> Invert:
        made.append(pipeline())
        return made[-1]

    registry = default_live_registry()
    registry.register(LivePipelineSpec(pipeline.name, NoopParams, factory, "test"))
    async with SessionManager(Settings(live_pipeline=pipeline.name), registry=registry, config=CONFIG) as manager:
        session = await manager.start_direct("cam", ThreadIngest(FRAMES))
        sink = CollectSink()
        session.attach_sink(sink)
        await asyncio.wait_for(session.wait_finished(), 60)
        status = session.status(for_api=True)
    numbers = [read_number(255 - f.to_ndarray(format="rgb24")) for f in sink.video_frames()]
    return numbers, made[0].threads, status


async def test_an_inline_pipeline_runs_on_the_decoder_thread() -> None:
    numbers, threads, status = await _run(Invert)
    assert numbers == list(range(FRAMES)) and status["error"] is None
    assert threads.count(DECODER) >= FRAMES // 2  # the first frame warms up on the pipeline thread


async def test_an_inline_failure_sends_frames_back_to_the_pipeline_thread() -> None:
    class FailsInline(Invert):
        name: ClassVar[str] = "invert-fails-inline"
        fail_inline = True

    numbers, threads, status = await _run(FailsInline)
    assert numbers == list(range(FRAMES)) and status["end_reason"] == "input ended"
    assert threads.count(DECODER) == 1  # the failed call; its frame ran again on the pipeline thread


async def test_a_slow_inline_call_sends_frames_back_to_the_pipeline_thread() -> None:
    class Slow(Invert):
        name: ClassVar[str] = "invert-slow"
        slow = True

    numbers, threads, _ = await _run(Slow)
    assert len(numbers) > FRAMES // 2 and numbers == sorted(numbers)
    assert threads.count(DECODER) == 3  # judged on the median of a few calls, not on one
