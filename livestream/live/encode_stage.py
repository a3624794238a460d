"""A session's one encode: processed frames and input audio to packets, fanned out to sinks.

Runs in the session's encode thread, or (`encode_here`, a pass-through pipeline's frame while
that thread is idle) on the decode thread, never both at once. Video is encoded as it comes
and never waits for audio; input audio (pushed by the ingest's thread) waits for the video
instead: an audio packet is released right after the first video frame at or past its time
(at most one audio frame early), so every output carries audio and video in step without
holding a frame back.

    ingest thread ──put_audio──▶ pending audio ─┐
    pipeline ──ProcessedFrame──▶ H264Encoder ───┴──▶ SinkFanout ──▶ sinks (trickle, RTMP, WHEP)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque

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
#: An audio item timed this far (90 kHz) ahead of the video being encoded is off the stream's
#: clock (a bad or wrapped timestamp; inputs keep audio within a second or so of video): it is
#: dropped, or it would hold back every audio item behind it.
MAX_AUDIO_LEAD = 5 * 90_000


def _audio_span(item: EncodedPacket | av.AudioFrame) -> tuple[int, int] | None:
    """An audio item's pts and duration (90 kHz); None for an untimed one (sent at once)."""
    if isinstance(item, EncodedPacket):
        return item.pts, item.duration
    if item.pts is None or item.time_base is None or not item.sample_rate:
        return None
    return round(item.pts * item.time_base / OUTPUT_TIME_BASE), round(item.samples * 90000 / item.sample_rate)


class EncodeStage:
    """Owns the encode thread, the video and audio encoders, and the fan-out's producer side.

    The loop hands batches over with `submit` (never blocks, never waits for the encode: no
    per-batch future and wake-up); past `max_frames` waiting, the oldest batch is dropped and
    counted. The thread is a daemon: one stuck in a codec cannot hold the process at exit.
    """

    def __init__(self, config: EncoderConfig, fanout: SinkFanout, *, name: str, max_frames: int = 64) -> None:
        self._fanout = fanout
        self.video = H264Encoder(config)
        self.audio = AudioEncoder()
        self.max_frames = max_frames
        self._pending: deque[EncodedPacket | av.AudioFrame] = deque()
        self._lock = threading.Lock()
        self._jobs: deque[list[ProcessedFrame] | None] = deque()  # None: the stream ended
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        #: A batch is being encoded (by the thread, or by `encode_here` on its caller's thread).
        self._busy = False
        self._loop_thread: int | None = None
        self._thread = threading.Thread(target=self._main, name=f"live-encode-{name[:16]}", daemon=True)
        self._finished: asyncio.Future[None] | None = None
        self._busy_since: float | None = None
        #: Why the encode thread stopped early (an exception escaped a codec), if it did.
        self.failure: str | None = None
        self.audio_dropped = 0
        self._warned_off_clock = False
        self.frames_dropped = 0
        self.frames_out = 0
        self.first_output: float | None = None
        self.last_output_time: float | None = None
        self.fps = RateMeter()
        self.latency = LatencyMeter()

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

    def stuck_for(self) -> float:
        """Seconds the current batch has been encoding (0 when idle)."""
        since = self._busy_since
        return time.monotonic() - since if since is not None else 0.0

    # --- loop -----------------------------------------------------------------------------

    def start(self) -> None:
        self._finished = asyncio.get_running_loop().create_future()
        self._loop_thread = threading.get_ident()
        self._thread.start()

    def submit(self, frames: list[ProcessedFrame]) -> None:
        """Queue a batch for the encode thread (loop; never blocks)."""
        with self._cond:
            if self._closed:
                return
            self._jobs.append(frames)
            self._queued += len(frames)
            while self._queued > self.max_frames and len(self._jobs) > 1:
                old = self._jobs.popleft()
                assert old is not None
                self._queued -= len(old)
                self.frames_dropped += len(old)
            self._cond.notify()

    def encode_here(self, frames: list[ProcessedFrame]) -> None:
        """Encode `frames` on the calling thread (the decoder's, for a pass-through pipeline:
        no thread hop, and the frame is still in that core's cache) when the encode thread is
        idle with nothing queued; otherwise queue them (`submit`). Never runs beside the thread,
        nor on the loop's thread (a WHIP ingest puts its frames from the loop)."""
        if threading.get_ident() == self._loop_thread:
            self.submit(frames)
            return
        with self._cond:
            here = not (self._closed or self._jobs or self._busy or self.failure is not None)
            if here:
                self._busy = True
        if not here:
            self.submit(frames)
            return
        self._busy_since = time.monotonic()
        try:
            self._encode(frames)
        except Exception as exc:  # a codec failed: the session sees `failure` and ends
            log.exception("encode failed")
            self.failure = f"encoder failed: {type(exc).__name__}: {exc}"
        finally:
            self._busy_since = None
            with self._cond:
                self._busy = False
                if self._jobs:
                    self._cond.notify()

    async def finish(self, timeout: float) -> None:
        """The stream ended: encode what is queued, flush the encoders (pending audio
        included), and wait for that, at most `timeout`."""
        with self._cond:
            self._jobs.append(None)
            self._cond.notify()
        if self._finished is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._finished)
        except TimeoutError:
            log.error("encoder flush did not return within %.1f s", timeout)

    def close(self) -> None:
        """End the thread now (after `finish`, or instead of it when aborting)."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify()
        self._thread.join(timeout=1.0)
        if self._thread.is_alive():
            log.error("encode thread %s is stuck in a codec call; left behind as a daemon thread", self._thread.name)

    # --- encode thread --------------------------------------------------------------------

    def _main(self) -> None:
        try:
            while True:
                with self._cond:
                    while (not self._jobs or self._busy) and not self._closed:
                        self._cond.wait()  # woken by submit, finish, close or encode_here
                    if self._closed:
                        return
                    job = self._jobs.popleft()
                    if job is not None:
                        self._queued -= len(job)
                    self._busy = True  # for good after the flush: nothing is encoded after it
                if job is None:
                    self._flush()
                    return
                self._busy_since = time.monotonic()
                try:
                    self._encode(job)
                finally:
                    self._busy_since = None
                    with self._cond:
                        self._busy = False
        except Exception as exc:  # a codec failed: the session sees `failure` and ends
            log.exception("encode thread failed")
            self.failure = f"encoder failed: {type(exc).__name__}: {exc}"
        finally:
            self._settle()

    def _settle(self) -> None:
        future = self._finished
        if future is None:
            return
        def done() -> None:
            if not future.done():
                future.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            future.get_loop().call_soon_threadsafe(done)

    def _encode(self, frames: list[ProcessedFrame]) -> None:
        put = self._fanout.put_batch
        for out in frames:
            packets = self.video.encode(out.frame, out.pts)
            if packets is None:
                continue
            if self._pending:
                packets += self._release_audio(out.pts)
            put(packets)  # one hand-off (and loop wake-up) per frame, its audio included
            done = time.monotonic()
            self.latency.add(done - out.arrival)
            self.frames_out += 1
            self.fps.tick(now=done)
            if self.first_output is None:
                self.first_output = done
            self.last_output_time = time.time()

    def _release_audio(self, video_pts: int) -> list[EncodedPacket]:
        """Audio up to the video's time (plus one audio frame), encoded; an item far ahead of
        the video (`MAX_AUDIO_LEAD`) is dropped."""
        items = []
        off_clock = 0
        with self._lock:
            while self._pending:
                span = _audio_span(self._pending[0])
                if span is not None and span[0] > video_pts + MAX_AUDIO_LEAD:
                    self._pending.popleft()
                    off_clock += 1
                    continue
                if span is not None and span[0] > video_pts + span[1]:
                    break
                items.append(self._pending.popleft())
            self.audio_dropped += off_clock
        if off_clock:
            log.log(
                logging.DEBUG if self._warned_off_clock else logging.WARNING,
                "dropped %d audio item(s) timed over %d s ahead of the video",
                off_clock,
                MAX_AUDIO_LEAD // 90_000,
            )
            self._warned_off_clock = True
        out: list[EncodedPacket] = []
        for item in items:
            out += self.audio.encode(item)
        return out

    def _flush(self) -> None:
        packets = self.video.flush()
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
        for item in items:
            packets += self.audio.encode(item)
        packets += self.audio.flush()
        self._fanout.put_batch(packets)
