"""An RTMP publisher as a session's input: FLV tags in, decoded frames out (one decode thread).

The connection (on the loop) parses each tag's header (`flv.py`) and `put`s it; a decode
thread turns video tags into frames with `av.CodecContext` (extradata from the sequence
headers; pts = dts + composition time, in ms) and hands them to the session (`FrameTarget`).
AAC is copied: raw frames with the AudioSpecificConfig, timed on the 90 kHz clock. The tag
queue is bounded in bytes: when decoding falls behind, the connection stops reading and TCP
pushes back on the publisher, instead of dropping compressed frames (which would break
decoding until the next keyframe).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction

import av
from av.stream import Stream

from ..ingest import FrameTarget, Ingest, IngestError
from ..media.audio_frames import aac_config_info
from ..media.packets import OUTPUT_TIME_BASE, AudioSource, EncodedPacket
from ..media.threads import run_in_thread
from .flv import CODED_FRAMES, SEQUENCE_END, SEQUENCE_START, AudioTag, VideoTag
from .input_tap import InputTap

__all__ = ["RtmpIngest"]

log = logging.getLogger(__name__)

MS = Fraction(1, 1000)
#: PyAV decoder per codec; AV1 needs libdav1d (FFmpeg's native av1 decoder is hardware-only).
_DECODERS = {"h264": ("h264",), "hevc": ("hevc",), "av1": ("libdav1d", "av1"), "vp9": ("vp9",)}

_Item = tuple[VideoTag | AudioTag, int, float]


class RtmpIngest(Ingest):
    """Fed by `RtmpServer`'s connection: `put()` tags, then `end()` or `fail()`."""

    name = "rtmp"

    def __init__(
        self, stream: str, *, on_stop: Callable[[], None] | None = None, max_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.stream = stream
        #: The publish URL's query as the publisher sent it (`key=…&pipeline=…`; set by the
        #: server): a gateway reads go-livepeer's start keys from it.
        self.query = ""
        self._on_stop = on_stop
        self.max_bytes = max_bytes
        self._items: deque[_Item] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._ended = False
        self._error: IngestError | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self.decode_errors = 0
        self.tags = 0
        self.metadata: dict[str, object] = {}
        #: The last timestamps decoded (ms, the publisher's clock): the input timeline.
        self.last_video_ms: int | None = None
        self.last_audio_ms: int | None = None
        self._audio_rate, self._audio_channels = 48000, 2
        #: The publisher's encoded stream as sent, for input recordings (`input_tap.py`).
        self.input = InputTap(stream)
        self.input_sinks = self.input.sinks

    def status(self) -> dict[str, object]:
        return {
            "stream": self.stream,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "decode_errors": self.decode_errors,
            "last_video_ms": self.last_video_ms,
            "last_audio_ms": self.last_audio_ms,
            "queued_bytes": self._bytes,
        }

    # --- connection side (loop) -----------------------------------------------------------

    def put(self, tag: VideoTag | AudioTag, timestamp: int, arrival: float) -> None:
        size = len(tag.data)
        if not self._ended:
            self.input.put(tag, timestamp)  # the same loop sets `_ended` (end/fail): no race
        with self._cond:
            if self._ended:
                return
            self._items.append((tag, timestamp, arrival))
            self._bytes += size
            self.tags += 1
            if self._bytes > self.max_bytes:
                self._room.clear()
            self._cond.notify()

    async def wait_room(self) -> None:
        """Until the decode thread has drained the queue to half (or `abort`); the server bounds it."""
        await self._room.wait()

    def end(self) -> None:
        """The publisher is done (unpublish or disconnect): decode what is queued, then end."""
        with self._cond:
            self._ended = True
            self._cond.notify()
        self.input.end()

    def fail(self, error: IngestError) -> None:
        with self._cond:
            if self._error is None and not self._stopped:
                self._error = error
            self._ended = True
            self._cond.notify()
        self.input.end()

    # --- Ingest ---------------------------------------------------------------------------

    async def run(self, target: FrameTarget) -> None:
        self._loop = asyncio.get_running_loop()
        # As long as the stream: ended by `end`/`fail` (the connection) or `stop`/`abort` (the
        # session, whose watchdog cancels this wait `stop_timeout` after a stop).
        await run_in_thread(lambda: self._decode(target), f"rtmp-decode-{self.stream[:16]}")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """The session stops: close the publisher's connection; queued tags are still decoded."""
        self._stopped = True
        self.end()
        if self._on_stop is not None:
            on_stop, self._on_stop = self._on_stop, None
            on_stop()

    def abort(self) -> None:
        with self._cond:
            self._bytes = 0
            self._items.clear()
        self._room.set()
        self.stop()

    # --- decode thread --------------------------------------------------------------------

    def _take(self) -> _Item | None:
        with self._cond:
            while not self._items and not self._ended:
                self._cond.wait()  # idle wait for tags: `end`, `fail` and `stop` notify it
            if not self._items:
                return None
            item = self._items.popleft()
            self._bytes -= len(item[0].data)
            if self._bytes <= self.max_bytes // 2 and not self._room.is_set() and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._room.set)
                except RuntimeError:
                    pass
            return item

    def _decode(self, target: FrameTarget) -> None:
        video: av.VideoCodecContext | None = None
        audio: bytes | None = None
        arrival = time.monotonic()
        try:
            while (item := self._take()) is not None:
                tag, ts, arrival = item
                target.on_input()
                if isinstance(tag, VideoTag):
                    video = self._video(target, video, tag, ts, arrival)
                else:
                    audio = self._audio(target, audio, tag, ts)
        finally:
            if video is not None:
                self._emit_video(target, video, None, arrival)

    def _open_video(self, codec: str, extradata: bytes) -> av.VideoCodecContext:
        last: Exception | None = None
        for name in _DECODERS.get(codec, (codec,)):
            try:
                ctx = av.CodecContext.create(name, "r")
            except (av.FFmpegError, ValueError) as exc:  # decoder not built in
                last = exc
                continue
            if extradata:
                ctx.extradata = extradata
            ctx.thread_count = 1  # one thread per stream: streams decode in parallel
            return ctx  # type: ignore[return-value]
        raise IngestError(f"no decoder for {codec} in this build of PyAV ({last})")

    def _video(
        self, target: FrameTarget, ctx: av.VideoCodecContext | None, tag: VideoTag, ts: int, arrival: float
    ) -> av.VideoCodecContext | None:
        if tag.kind == SEQUENCE_START:
            if ctx is not None:
                self._emit_video(target, ctx, None, arrival)  # a new configuration: flush the old
            self.video_codec = tag.codec
            try:
                return self._open_video(tag.codec, tag.data)
            except IngestError as exc:
                self.fail(exc)
                return None
        if tag.kind == SEQUENCE_END or tag.kind != CODED_FRAMES:
            return ctx
        if ctx is None:  # no sequence header yet (joined mid-stream): wait for one
            return None
        packet = av.Packet(tag.data)
        packet.dts = ts
        packet.pts = ts + tag.cts
        packet.time_base = MS
        self._emit_video(target, ctx, packet, arrival)
        return ctx

    def _emit_video(self, target: FrameTarget, ctx: av.VideoCodecContext, packet: av.Packet[Stream] | None, arrival: float) -> None:
        try:
            frames = ctx.decode(packet)
        except av.EOFError:
            return
        except (av.InvalidDataError, ValueError) as exc:
            self.decode_errors += 1
            if self.decode_errors <= 3 or self.decode_errors % 100 == 0:
                target.report_error(f"rtmp {self.stream}: undecodable video packet skipped ({exc})")
            return
        for frame in frames:
            if frame.pts is None:
                continue
            frame.time_base = MS
            self.video_frames += 1
            self.last_video_ms = frame.pts
            target.put_video(frame, arrival)

    def _audio(self, target: FrameTarget, config: bytes | None, tag: AudioTag, ts: int) -> bytes | None:
        """AAC is copied, not decoded: raw frames with their AudioSpecificConfig (`config`)."""
        if tag.config:
            rate, channels = aac_config_info(tag.data)
            self.audio_codec = "aac"
            self._audio_rate, self._audio_channels = rate or 48000, channels or 2
            target.set_audio_source(AudioSource("aac", self._audio_rate, self._audio_channels, copy=True))
            return tag.data
        if config is None or not tag.data:
            return config
        pts = ts * 90
        self.audio_frames += 1
        self.last_audio_ms = ts
        target.put_audio(
            EncodedPacket(
                "audio",
                "aac",
                tag.data,
                pts,
                pts,
                OUTPUT_TIME_BASE,
                sample_rate=self._audio_rate,
                channels=self._audio_channels,
                extradata=config,
                duration=round(1024 * 90000 / self._audio_rate),
            )
        )
        return config
