"""Live sessions fed MPEG-TS segments that the ffmpeg binary muxed, checked the way a viewer
would: is all the audio there, is it in every segment, is it in step with the picture, is every
frame there; and are the trace events sent when ai-runner sends them.

ffmpeg's MPEG-TS muxer packs several audio frames into one PES with a PTS only on the first
(`tests/ffmpeg_inputs.py`; go-livepeer's segmenter does the same), unlike our own test source.
Every input has a white frame and a 1 kHz beep at the same instant (2.5 s), so A/V sync is
measured on content: output (beep - flash) against input (beep - flash).

The audio duration is compared with what decoding each input segment on its own gets (what
a per-segment engine can deliver): for the mid-PES case that is about 7% less than the source,
the frames of the PES cut at each segment start (`viewer_problems` has the tolerances).

Each case is one session of 4 one-second segments at 128x128 (2-3 s of wall time).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from ffmpeg_inputs import AvSource, audio_pes_layout, make_ts_segments, measure, viewer_problems
from live_helpers import TEST_CONFIG, Channels, Collected, collect, events_of, publish_segments, wait_for

from trickle import TricklePublisher, TrickleSubscriber


@dataclass(frozen=True)
class Case:
    src: AvSource
    split: str = "segment"
    straddle: bool = False
    pes_payload_size: int | None = None


CASES = {
    # ffmpeg's default muxing: several frames per PES, PTS on the first only.
    "aac-48k-stereo": Case(AvSource(codec="aac", rate=48000, channels=2)),
    "aac-44k-mono": Case(AvSource(codec="aac", rate=44100, channels=1)),
    "aac-44k-stereo": Case(AvSource(codec="aac", rate=44100, channels=2)),
    "aac-latm-48k": Case(AvSource(codec="latm", rate=48000, channels=2)),
    "mp3-44k": Case(AvSource(codec="mp3", rate=44100, channels=2)),
    "mp2-48k": Case(AvSource(codec="mp2", rate=48000, channels=2)),
    "opus-48k": Case(AvSource(codec="opus", rate=48000, channels=2)),
    # One continuous MPEG-TS cut at its keyframes, with audio PES that span the cuts: each
    # segment after the first opens in the middle of an audio PES.
    "aac-48k-mid-pes": Case(AvSource(codec="aac", rate=48000, channels=2), split="bytes", straddle=True),
    # The control: ffmpeg writing one AAC frame per PES, the layout of our own test source.
    "aac-48k-one-frame-per-pes": Case(AvSource(codec="aac", rate=48000, channels=2), pes_payload_size=0),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ffmpeg-inputs")


def segments_for(name: str, case: Case, workdir: Path) -> list[bytes]:
    segments = make_ts_segments(
        case.src, workdir / name, split=case.split, straddle=case.straddle, pes_payload_size=case.pes_payload_size
    )
    # The input is what the case claims (tests/test_ffmpeg_inputs.py checks this more fully).
    layout = audio_pes_layout(segments, case.src.expected_codec)
    if case.pes_payload_size == 0:
        assert layout.multi_frame_pes == 0, layout
    else:
        assert layout.multi_frame_pes > len(layout.frames_per_pes) // 2, layout
    assert any(layout.starts_mid_pes) == case.straddle, layout
    return segments


async def create_channels(http: aiohttp.ClientSession, ch: Channels) -> None:
    for url in (ch.publish_url, ch.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200


async def start(engine: TestClient[Any, Any], ch: Channels, **extra: Any) -> None:
    resp = await engine.post("/live-video-to-video", json=ch.start_body(model_id="noop", **extra))
    assert resp.status == 200, await resp.text()


async def run_session(
    engine: TestClient[Any, Any], orchestrator: str, http: aiohttp.ClientSession, name: str, segments: list[bytes]
) -> tuple[Collected, list[dict[str, Any]]]:
    """Publish `segments` (0.3 s apart) through a noop session; its output segments and events."""
    ch = Channels(orchestrator, name)
    await create_channels(http, ch)
    out, events = Collected(), Collected()
    readers = [
        asyncio.create_task(collect(ch.publish_url, http, out)),
        asyncio.create_task(collect(ch.events_url, http, events)),
    ]
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        await start(engine, ch, stream_id=name)
        await publish_segments(pub, segments, gap=0.3)
    async with asyncio.timeout(15):
        await asyncio.gather(*readers)
    return out, [e["event"] for e in events_of(events)]


@pytest.mark.parametrize("name", list(CASES))
async def test_ffmpeg_muxed_segments_keep_all_audio_in_sync(
    name: str, engine, orchestrator, http, workdir: Path
) -> None:
    case = CASES[name]
    segments = segments_for(name, case, workdir)
    inp = measure(segments)
    out, events = await run_session(engine, orchestrator, http, name, segments)
    result = measure(out.segments)
    final = events[-1]
    assert final.get("final") and final["state"] == "OFFLINE", final
    found = viewer_problems(inp, result, source_seconds=case.src.seconds)
    errors = [e["message"] for e in events if e["type"] == "error"]
    assert not found, (
        f"{name}: " + "; ".join(found) + f"\n  in:  {inp.describe()}\n  out: {result.describe()}\n  errors: {errors}"
    )


async def test_sample_rate_change_mid_session(engine, orchestrator, http, workdir: Path) -> None:
    """Two seconds at 44.1 kHz mono, then two at 48 kHz stereo on the same clock (a source
    switched in OBS): the output goes on with all the audio of both parts."""
    first = AvSource(codec="aac", rate=44100, channels=1, seconds=2.0, marker=99.0)  # no beep or flash
    second = AvSource(codec="aac", rate=48000, channels=2, seconds=2.0, start=2.0, marker=2.5)
    segments = make_ts_segments(first, workdir / "rate-a") + make_ts_segments(second, workdir / "rate-b")
    assert audio_pes_layout(segments, "aac").multi_frame_pes > 10
    inp = measure(segments)
    assert inp.sample_rates == {44100, 48000} and inp.video_frames == 120
    out, events = await run_session(engine, orchestrator, http, "rates", segments)
    result = measure(out.segments)
    assert events[-1].get("final") and events[-1]["state"] == "OFFLINE", events[-1]
    found = viewer_problems(inp, result, source_seconds=4.0)
    # The beep and flash are in the 48 kHz part (2.5 s): sync is measured after the switch.
    assert not found, "; ".join(found) + f"\n  in:  {inp.describe()}\n  out: {result.describe()}"


@dataclass
class TimedOutput:
    """An output channel read chunk by chunk, with wall-clock times (the trace events' clock)."""

    first_byte: list[float]
    last_byte: list[float]


async def collect_timed(url: str, http: aiohttp.ClientSession, out: TimedOutput) -> None:
    async with TrickleSubscriber(url, start_seq=0, session=http) as sub:
        async for segment in sub:
            first = None
            async for chunk in segment:
                if chunk and first is None:
                    first = time.time()
            out.first_byte.append(first or time.time())
            out.last_byte.append(time.time())


async def test_trace_events_follow_ai_runner_meaning(engine_factory, orchestrator, http, workdir: Path) -> None:
    """`runner_receive_first_ingest_segment`: the first input segment has been read whole (not
    at its first bytes). `runner_send_first_processed_segment`: the first processed bytes went
    out (not when the first output segment is finished).

    Both are checked by construction, not by timing margins: the last bytes of input segment 0
    are held back 1 s after the rest, and input segment 1 is only sent once the processed trace
    has arrived (output segment 0 cannot end before it: it ends at the keyframe of input
    segment 1's first frame)."""
    engine = await engine_factory(config=replace(TEST_CONFIG, input_timeout=20.0))
    src = AvSource(codec="aac", rate=48000, channels=2)
    segments = make_ts_segments(src, workdir / "trace")
    ch = Channels(orchestrator, "trace")
    await create_channels(http, ch)
    timed, events = TimedOutput([], []), Collected()
    readers = [
        asyncio.create_task(collect_timed(ch.publish_url, http, timed)),
        asyncio.create_task(collect(ch.events_url, http, events)),
    ]

    def trace(kind: str) -> dict[str, Any] | None:
        return next((e["event"] for e in events_of(events) if e["event"]["type"] == kind), None)

    head, tail = segments[0][: len(segments[0]) // 2], segments[0][len(segments[0]) // 2 :]
    processed_before_segment_1 = True
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        await start(engine, ch, stream_id="trace")
        async with pub.segment() as seg:
            await seg.write(head)
            await asyncio.sleep(1.0)
            tail_sent = time.time()
            await seg.write(tail)
        try:
            await wait_for(lambda: trace("runner_send_first_processed_segment") is not None, timeout=6.0)
        except AssertionError:
            processed_before_segment_1 = False
        segment_1_sent = time.time()
        await publish_segments(pub, segments[1:], gap=0.3)
    async with asyncio.timeout(15):
        await asyncio.gather(*readers)

    ingest, processed = trace("runner_receive_first_ingest_segment"), trace("runner_send_first_processed_segment")
    assert ingest is not None and processed is not None, [e["event"]["type"] for e in events_of(events)]
    assert timed.last_byte, "no output"
    found = []
    # Trace timestamps are whole milliseconds (truncated), hence the int().
    if ingest["timestamp"] < int(tail_sent * 1000):
        found.append(
            f"runner_receive_first_ingest_segment at {ingest['timestamp']}, "
            f"{tail_sent * 1000 - ingest['timestamp']:.0f} ms before the last bytes of input segment 0 were sent"
        )
    if not processed_before_segment_1:
        found.append(
            "runner_send_first_processed_segment not sent within 6 s of input segment 0 while output segment 0 "
            f"was streaming (its first bytes arrived {segment_1_sent - timed.first_byte[0]:.1f} s before input "
            f"segment 1 was sent); it came {processed['timestamp'] / 1000 - segment_1_sent:.2f} s after input "
            "segment 1 was sent"
        )
    if processed["timestamp"] > int(timed.last_byte[0] * 1000) + 1:
        found.append(
            f"runner_send_first_processed_segment {processed['timestamp'] - timed.last_byte[0] * 1000:.0f} ms "
            "after output segment 0's last byte arrived"
        )
    assert not found, "; ".join(found) + "\n" + json.dumps([ingest, processed])
