"""Audio waits for the video reaching its time, but one audio item with a timestamp far off the
stream's clock (a wrapped or bad pts) is dropped instead of holding every later one back."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np

from livestream.egress import SinkFanout
from livestream.live.encode_stage import EncodeStage
from livestream.live.pipeline_stage import ProcessedFrame
from livestream.media.video_encoder import EncoderConfig

from live_helpers import CollectSink

RATE = 48_000
SAMPLES = 1024


def _audio(n: int, pts: int) -> av.AudioFrame:
    tone = np.sin(2 * np.pi * 440 * (np.arange(SAMPLES) + n * SAMPLES) / RATE).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(tone[np.newaxis], format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = RATE, pts, Fraction(1, RATE)
    return frame


async def test_an_audio_item_far_ahead_of_the_video_does_not_silence_the_rest() -> None:
    errors: list[str] = []
    fanout = SinkFanout(errors.append)
    sink = CollectSink()
    fanout.attach(sink)  # starts the sink's task
    stage = EncodeStage(EncoderConfig(), fanout, name="clock", max_frames=128)
    stage.start()
    audio_frames = 3 * RATE // SAMPLES  # 3 s of audio, one wrapped timestamp among them
    for n in range(audio_frames):
        stage.push_audio(_audio(n, 2**33 - SAMPLES if n == 10 else n * SAMPLES))
    for i in range(90):  # 3 s of video at 30 fps
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")
        stage.submit([ProcessedFrame(frame, i * 3000, 0.0)])
    async with asyncio.timeout(30):
        while stage.frames_out < 90:
            await asyncio.sleep(0.01)
        while len(sink.packets) < sink.received:
            await asyncio.sleep(0.01)
    live = [p for p in sink.packets if p.kind == "audio"]  # out while the stream runs
    await stage.finish(10)
    fanout.end()
    await sink.aclose(10)
    stage.close()
    seconds = sum(p.duration for p in live) / 90_000
    assert seconds > 2.5, f"only {seconds:.2f} s of 3 s of audio came out with the video"
    assert stage.audio_dropped == 1 and not errors
    assert all(p.pts < 4 * 90_000 for p in sink.packets if p.kind == "audio")
