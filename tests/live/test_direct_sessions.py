"""Direct sessions: any `Ingest` in, packet sinks out (the interface RTMP and WebRTC plug into)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livestream.errors import StreamBusyError
from livestream.live import SessionManager
from livestream.protocols import OUTPUT_SINKS
from livestream.ingest import FrameTarget, Ingest, InputStalled
from livestream.live.testsrc import read_number
from livestream.settings import Settings

from live_helpers import TEST_CONFIG, CollectSink, numbered_frame



class FakeIngest(Ingest):
    """`frames` numbered frames at 30 fps from the loop, then the end (or a stall)."""

    name = "fake"

    def __init__(self, frames: int, *, stall: bool = False, pace: float = 0.0) -> None:
        self.frames, self.stall, self.pace = frames, stall, pace
        self._stop = asyncio.Event()

    async def run(self, target: FrameTarget) -> None:
        for n in range(self.frames):
            if self._stop.is_set():
                return
            target.on_input()
            target.put_video(numbered_frame(n))
            await asyncio.sleep(self.pace)
        if self.stall:
            await self._stop.wait()
            raise InputStalled("input stalled: test")

    def stop(self) -> None:
        self._stop.set()

    def abort(self) -> None:
        self._stop.set()


def _numbers(sink: CollectSink) -> list[int]:
    return [read_number(f.to_ndarray(format="rgb24")) for f in sink.video_frames()]


async def test_direct_session_fans_out_to_sinks_and_a_slow_one_never_stalls_the_rest() -> None:
    settings = Settings(live_pipeline="noop")
    async with SessionManager(settings, config=TEST_CONFIG, output_sinks=OUTPUT_SINKS) as manager:
        ingest = FakeIngest(60, pace=0.005)
        session = await manager.start_direct("cam", ingest)
        fast, slow = CollectSink("fast"), CollectSink("slow", slow=True, max_packets=8)
        session.attach_sink(fast)
        session.attach_sink(slow)
        with pytest.raises(StreamBusyError):
            await manager.start_direct("cam", FakeIngest(1))
        assert [s.stream_id for s in manager.sessions()] == ["cam"]
        await asyncio.wait_for(session.wait_finished(), 30)
        status = session.status(for_api=True)
        assert status["end_reason"] == "input ended" and status["error"] is None
        assert status["ingest"]["kind"] == "fake"
        assert fast.finished
        numbers = _numbers(fast)
        assert numbers == list(range(60))
        assert fast.packets[0].keyframe and fast.packets[0].codec == "h264"
        assert slow.dropped > 0  # dropped, not blocking
        assert {o["name"] for o in status["outputs"]} <= {"fast", "slow"}


async def test_direct_session_stall_ends_it_with_input_stalled() -> None:
    async with SessionManager(Settings(live_pipeline="noop"), config=TEST_CONFIG) as manager:
        session = await manager.start_direct("stall", FakeIngest(5, stall=True))
        await asyncio.sleep(0.5)
        await manager.stop("stall")
        status = manager.ended_status("stall")
        assert status is not None and status["final"]


async def test_configure_before_and_while_publishing() -> None:
    async with SessionManager(Settings(live_pipeline="color-filter"), config=TEST_CONFIG) as manager:
        result: dict[str, Any] = await manager.configure("cam", {"params": {"hue_shift": 90}})
        assert result["live"] is False and result["params"]["hue_shift"] == 90
        session = await manager.start_direct("cam", FakeIngest(200, pace=0.01))
        assert session.params.hue_shift == 90  # type: ignore[attr-defined]
        result = await manager.configure("cam", {"params": {"invert": True}})
        assert result["live"] is True and result["params"]["invert"] is True
        from pipelines.errors import InvalidRequestError

        with pytest.raises(InvalidRequestError):
            await manager.configure("cam", {"params": {"hue_shift": 1000}})
        with pytest.raises(InvalidRequestError):
            await manager.configure("cam", {"rtmp_output": "http://x"})
        await manager.stop("cam")


async def test_rtmp_output_is_attached_changed_and_removed_while_live() -> None:
    settings = Settings(live_pipeline="noop", rtmp_output="rtmp://127.0.0.1:9/app/{stream}")
    async with SessionManager(settings, config=TEST_CONFIG, output_sinks=OUTPUT_SINKS) as manager:
        session = await manager.start_direct("cam", FakeIngest(300, pace=0.01))
        pushes = [s for s in session.sinks.sinks if s.name == "rtmp-push"]
        assert [p.url for p in pushes] == ["rtmp://127.0.0.1:9/app/cam"]  # type: ignore[attr-defined]
        result = await manager.configure("cam", {"rtmp_output": "rtmp://127.0.0.1:9/other/key"})
        assert result["rtmp_output"] == "rtmp://127.0.0.1:9/other/key"
        assert [s.url for s in session.sinks.sinks] == ["rtmp://127.0.0.1:9/other/key"]  # type: ignore[attr-defined]
        await manager.configure("cam", {"rtmp_output": ""})
        assert session.sinks.sinks == ()
        await manager.configure("cam", {"rtmp_output": None})  # back to the template
        assert [s.url for s in session.sinks.sinks] == ["rtmp://127.0.0.1:9/app/cam"]  # type: ignore[attr-defined]
        await manager.stop("cam")
