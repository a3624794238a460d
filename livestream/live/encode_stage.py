"""A session's one encode: processed frames and input audio to packets, fanned out to sinks.

Runs in the session's encode thread. Video is encoded as it comes and never waits for audio;
input audio (pushed by the ingest's thread) waits for the video instead: an audio packet is
released right after the first video frame at or past its time (at most one audio frame
early), so every output carries audio and video in step without holding a frame back.

    ingest thread ──put_audio──▶ pending audio ─┐
    pipeline ──ProcessedFrame──▶ H264Encoder ───┴──▶ SinkFanout ──▶ sinks (trickle, RTMP, WHEP)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import av

from ..egress import SinkFanout
from ..media.audio_encoder import AudioEncoder
from ..media.packets import OUTPUT_TIME_BASE, EncodedPacket
from ..media.video_encoder import EncoderConfig, H264Encoder
from .pipeline_stage import ProcessedFrame
from .stats import LatencyMeter, RateMeter

__all__ = ["EncodeStage"]

log = logging.getLogger(__name__)

#: Audio items held while no video reaches their time; older ones are dropped beyond this.
MAX_PENDING_AUDIO = 256


def _audio_span(item: EncodedPacket | av.AudioFrame) -> tuple[int, int] | None:
    """An audio item's pts and duration (90 kHz); None for an untimed one (sent at once)."""
    if isinstance(item, EncodedPacket):
        return item.pts, item.duration
    if item.pts is None or item.time_base is None or not item.sample_rate:
        return None
    return round(item.pts * item.time_base / OUTPUT_TIME_BASE), round(item.samples * 90000 / item.sample_rate)


class EncodeStage:
    """Owns the encode thread, the video and audio encoders, and the fan-out's producer side."""

    def __init__(self, config: EncoderConfig, fanout: SinkFanout, *, name: str) -> None:
        self._exec = ThreadPoolExecutor(1, thread_name_prefix=f"live-encode-{name[:16]}")
        self._fanout = fanout
        self.video = H264Encoder(config)
        self.audio = AudioEncoder()
        self._pending: deque[EncodedPacket | av.AudioFrame] = deque()
        self._lock = threading.Lock()
        self.audio_dropped = 0
        self.frames_out = 0
        self.first_output: float | None = None
        self.last_output_time: float | None = None
        self.fps = RateMeter()
        self.latency = LatencyMeter()
        self.on_first_frame: Callable[[], None] | None = None

    # --- any thread -----------------------------------------------------------------------

    def push_audio(self, item: EncodedPacket | av.AudioFrame) -> None:
        """Timed input audio (90 kHz); sent once the video reaches it."""
        with self._lock:
            self._pending.append(item)
            while len(self._pending) > MAX_PENDING_AUDIO:
                self._pending.popleft()
                self.audio_dropped += 1

    def request_keyframe(self) -> None:
        self.video.request_keyframe()

    # --- loop -----------------------------------------------------------------------------

    async def encode(self, frames: list[ProcessedFrame]) -> None:
        """Encode and fan out one batch on the encode thread.

        Unbounded here: the caller owns the bound (`Session` awaits it within
        `pipeline_call_timeout` and ends the stream when the encoder is stuck).
        """
        await asyncio.get_running_loop().run_in_executor(self._exec, self._encode, frames)

    async def finish(self, timeout: float) -> None:
        """The stream ended: flush the encoders (pending audio included); bounded."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().run_in_executor(self._exec, self._flush)
        except TimeoutError:
            log.error("encoder flush did not return within %.1f s", timeout)

    def close(self) -> None:
        """End the thread (after `finish`, or instead of it when aborting)."""
        self._exec.shutdown(wait=False, cancel_futures=True)

    # --- encode thread --------------------------------------------------------------------

    def _encode(self, frames: list[ProcessedFrame]) -> None:
        put = self._fanout.put
        for out in frames:
            packets = self.video.encode(out.frame, out.pts)
            if packets is None:
                continue
            for packet in packets:
                put(packet)
            for packet in self._release_audio(out.pts):
                put(packet)
            done = time.monotonic()
            self.latency.add(done - out.arrival)
            self.frames_out += 1
            self.fps.tick(now=done)
            if self.first_output is None:
                self.first_output = done
            self.last_output_time = time.time()

    def _release_audio(self, video_pts: int) -> list[EncodedPacket]:
        """Audio up to the video's time (plus one audio frame), encoded."""
        items = []
        with self._lock:
            while self._pending:
                span = _audio_span(self._pending[0])
                if span is not None and span[0] > video_pts + span[1]:
                    break
                items.append(self._pending.popleft())
        out: list[EncodedPacket] = []
        for item in items:
            out += self.audio.encode(item)
        return out

    def _flush(self) -> None:
        put = self._fanout.put
        for packet in self.video.flush():
            put(packet)
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
        for item in items:
            for packet in self.audio.encode(item):
                put(packet)
        for packet in self.audio.flush():
            put(packet)
