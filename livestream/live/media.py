"""PyAV decode and encode for live sessions, run in worker threads.

Decode: the session's ingest task writes each trickle segment's bytes into a `SegmentPipe` as
they arrive; a `SegmentDecoder` thread opens one MPEG-TS demuxer per segment on it (a
file-like object, no OS pipes) and decodes while the segment is still arriving. Each segment
is a standalone MPEG-TS chunk starting with a keyframe, so a corrupt one is skipped alone and a
resolution change needs nothing special.

Encode: a `SegmentedEncoder` (confined to one thread) runs libx264 with zero-latency settings
(no B-frames, no lookahead, a forced IDR every `gop_seconds`) into one MPEG-TS muxer, and a
`TsSegmenter` cuts the byte stream before each PAT that precedes a keyframe (the muxer writes
PAT/PMT there), so every output segment is standalone and starts with a keyframe. Audio packets
are copied when MPEG-TS takes their codec, transcoded to AAC otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.frame import PictureType

from .sinks import EncodedPacket

__all__ = [
    "AUDIO_COPY_CODECS",
    "OUTPUT_TIME_BASE",
    "EncoderConfig",
    "Outbox",
    "SegmentDecoder",
    "SegmentPipe",
    "SegmentedEncoder",
    "TsSegmenter",
    "fit_size",
    "resize_rgb",
    "run_in_thread",
]

log = logging.getLogger(__name__)

#: Output timestamps are on MPEG-TS's 90 kHz clock, rescaled from the input's.
OUTPUT_TIME_BASE = Fraction(1, 90000)
#: Audio codecs copied into MPEG-TS as they are (their TS packets carry in-band headers).
AUDIO_COPY_CODECS = frozenset({"aac", "mp2", "mp3", "ac3", "eac3"})
MIN_SIZE, MAX_SIZE, SIZE_STEP = 64, 1024, 8

_TS_PACKET = 188
_PAT_PID = 0x0000
#: The muxer numbers elementary streams from 0x100 in the order they are added: video first.
_VIDEO_PID = 0x0100


def run_in_thread(fn: Callable[[], None], name: str) -> asyncio.Future[None]:
    """Run `fn` in a dedicated daemon thread; the returned future completes when it returns.

    Long-lived blocking loops (a decoder reading its pipe) get their own thread rather than a
    slot in the loop's default executor, which a few sessions would exhaust.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def _settle(exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)

    def _main() -> None:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(_settle, error)
        except RuntimeError:
            pass

    threading.Thread(target=_main, name=name, daemon=True).start()
    return future


# --- decode ---------------------------------------------------------------------------------


class SegmentPipe:
    """Bytes of consecutive segments, written by the event loop, read by the decoder thread.

    `read()` blocks until bytes arrive and returns `b""` at the end of the current segment, so
    each segment looks like a whole file to its demuxer. Memory is bounded: the writer awaits
    `wait_room()` when more than `max_bytes` are buffered.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._loop = loop
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._chunks: deque[tuple[bytes, float] | None] = deque()  # None: end of a segment
        self._buffered = 0
        self._closed = False
        self._room = asyncio.Event()
        self._room.set()
        #: Arrival time (monotonic) of the chunk read last: the arrival of the frames decoded now.
        self.last_arrival = 0.0
        #: Bytes of the segment being read.
        self.segment_bytes = 0

    # loop side
    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            if self._closed:
                return
            self._chunks.append((data, time.monotonic()))
            self._buffered += len(data)
            if self._buffered > self.max_bytes:
                self._room.clear()
            self._cond.notify_all()

    def end_segment(self) -> None:
        with self._cond:
            if not self._closed:
                self._chunks.append(None)
                self._cond.notify_all()

    def close(self, *, discard: bool = False) -> None:
        """No more segments; with `discard`, unread bytes are dropped too (stop now)."""
        with self._cond:
            self._closed = True
            if discard:
                self._chunks.clear()
                self._buffered = 0
            self._cond.notify_all()
        self._room.set()

    async def wait_room(self) -> None:
        await self._room.wait()

    # thread side
    def _take(self, size: int) -> bytes:
        chunk = self._chunks[0]
        assert chunk is not None
        data, arrival = chunk
        if len(data) > size:
            self._chunks[0] = (data[size:], arrival)
            data = data[:size]
        else:
            self._chunks.popleft()
        self._buffered -= len(data)
        self.segment_bytes += len(data)
        self.last_arrival = arrival
        if self._buffered <= self.max_bytes // 2 and not self._room.is_set():
            try:
                self._loop.call_soon_threadsafe(self._room.set)
            except RuntimeError:
                pass
        return data

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else 1 << 20
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if not self._chunks or self._chunks[0] is None:
                return b""
            return self._take(size)

    def begin_segment(self) -> bool:
        """Wait for the next segment's first bytes; False when the stream has ended."""
        with self._cond:
            while True:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if not self._chunks:
                    return False
                if self._chunks[0] is None:  # an empty segment
                    self._chunks.popleft()
                    continue
                self.segment_bytes = 0
                return True

    def finish_segment(self) -> None:
        """Discard what the demuxer left of the current segment, up to its end."""
        with self._cond:
            while True:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if not self._chunks:
                    return
                if self._chunks[0] is None:
                    self._chunks.popleft()
                    return
                self._take(1 << 30)


@dataclass(frozen=True, slots=True)
class AudioSource:
    """What the encoder needs to know about the input audio of the current segment."""

    codec: str
    sample_rate: int
    channels: int
    copy: bool

    @property
    def key(self) -> tuple[str, int, bool]:
        return (self.codec if self.copy else "aac", self.sample_rate if self.copy else 48000, self.copy)


class SegmentDecoder:
    """Decodes the segments of a `SegmentPipe` in its own thread (`run`)."""

    #: Demuxer options: start decoding after the first TS packets instead of probing seconds.
    OPEN_OPTIONS = {"probesize": "32", "analyzeduration": "0"}

    def __init__(
        self,
        pipe: SegmentPipe,
        *,
        on_video: Callable[[av.VideoFrame, float], None],
        on_audio: Callable[[av.Packet | av.AudioFrame], None],
        on_audio_source: Callable[[AudioSource | None], None],
        on_error: Callable[[str], None],
        threads: int = 1,
    ) -> None:
        self._pipe = pipe
        self.threads = threads
        self._on_video = on_video
        self._on_audio = on_audio
        self._on_audio_source = on_audio_source
        self._on_error = on_error
        self.segments = 0
        self.bad_segments = 0
        self.decode_errors = 0

    def run(self) -> None:
        while self._pipe.begin_segment():
            self.segments += 1
            try:
                self._decode_segment()
            finally:
                self._pipe.finish_segment()

    def _decode_segment(self) -> None:
        index = self.segments
        try:
            container = av.open(self._pipe, "r", format="mpegts", options=self.OPEN_OPTIONS)
        except (av.InvalidDataError, av.EOFError) as exc:
            self.bad_segments += 1
            self._on_error(f"input segment {index} skipped: not decodable MPEG-TS ({exc.strerror or exc})")
            return
        with container:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            if video is None:
                self.bad_segments += 1
                self._on_error(f"input segment {index} skipped: no video stream")
                return
            source = None
            if audio is not None and audio.codec_context is not None:
                name = audio.codec_context.name
                source = AudioSource(
                    codec=name,
                    sample_rate=audio.codec_context.sample_rate or 48000,
                    channels=audio.codec_context.channels or 1,
                    copy=name in AUDIO_COPY_CODECS,
                )
            self._on_audio_source(source)
            # One decoding thread per session, as for the encoder (sessions run in parallel).
            video.codec_context.thread_count = self.threads
            streams = [s for s in (video, audio) if s is not None]
            errors = 0
            try:
                for packet in container.demux(*streams):
                    if packet.stream is video:
                        try:
                            frames = video.decode(packet)
                        except av.InvalidDataError:
                            errors += 1
                            continue
                        for frame in frames:
                            self._on_video(frame, self._pipe.last_arrival)
                    elif packet.dts is not None and source is not None:
                        if source.copy:
                            self._on_audio(packet)
                        else:
                            try:
                                for aframe in audio.decode(packet):  # type: ignore[union-attr]
                                    self._on_audio(aframe)
                            except av.InvalidDataError:
                                errors += 1
            except (av.InvalidDataError, av.EOFError) as exc:
                errors += 1
                log.debug("segment %d: demux error %s", index, exc)
            # demux() ends with flush packets; after a demux error, flush here instead.
            try:
                for frame in video.decode(None):
                    self._on_video(frame, self._pipe.last_arrival)
            except av.EOFError:
                pass
            if errors:
                self.decode_errors += errors
                self._on_error(f"input segment {index}: {errors} undecodable packet(s) skipped")
            if self._pipe.segment_bytes % _TS_PACKET:
                self._on_error(f"input segment {index} truncated ({self._pipe.segment_bytes} bytes)")


# --- frame sizes ----------------------------------------------------------------------------


def fit_size(width: int, height: int) -> tuple[int, int]:
    """The processing size for an input of `width`x`height` when params name none: the same
    aspect, at most 1024 on a side, multiples of 8, at least 64."""
    scale = min(1.0, MAX_SIZE / max(width, height))

    def _snap(v: float) -> int:
        return int(min(MAX_SIZE, max(MIN_SIZE, round(v / SIZE_STEP) * SIZE_STEP)))

    return _snap(width * scale), _snap(height * scale)


def resize_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """Scale to cover `width`x`height` keeping the aspect ratio, then centre-crop (ai-runner)."""
    if frame.width * height == frame.height * width:
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    scale = max(width / frame.width, height / frame.height)
    sw, sh = max(width, round(frame.width * scale)), max(height, round(frame.height * scale))
    rgb = frame.to_ndarray(format="rgb24", width=sw, height=sh)
    x, y = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(rgb[y : y + height, x : x + width])


# --- encode ---------------------------------------------------------------------------------


class TsSegmenter:
    """Sans-IO: splits an MPEG-TS byte stream before each PAT that follows video payload.

    `feed()` returns byte strings and `None` markers (cut here). With periodic PAT/SDT off,
    the muxer writes a PAT only in its header and before each keyframe.
    """

    def __init__(self) -> None:
        self._rest = b""
        self._has_payload = False

    def feed(self, data: bytes) -> list[bytes | None]:
        buf = self._rest + data if self._rest else data
        end = len(buf) - len(buf) % _TS_PACKET
        self._rest = bytes(buf[end:])
        out: list[bytes | None] = []
        start = 0
        for i in range(0, end, _TS_PACKET):
            pid = ((buf[i + 1] & 0x1F) << 8) | buf[i + 2] if buf[i] == 0x47 else -1
            if pid == _PAT_PID and self._has_payload:
                if i > start:
                    out.append(bytes(buf[start:i]))
                out.append(None)
                start = i
                self._has_payload = False
            elif pid == _VIDEO_PID:
                self._has_payload = True
        if end > start:
            out.append(bytes(buf[start:end]))
        return out

    def reset(self) -> bytes:
        """Forget the state (a new muxer starts); returns any unaligned leftover bytes."""
        rest, self._rest, self._has_payload = self._rest, b"", False
        return rest


@dataclass(frozen=True)
class EncoderConfig:
    """Output video settings (low-latency H.264)."""

    gop_seconds: float = 1.0
    preset: str = "superfast"
    #: Constrained Baseline: what WebRTC viewers negotiate (42e01f) for the shared encode, and
    #: what every hardware decoder takes (no CABAC or 8x8 transform; a few % more bits).
    profile: str = "baseline"
    crf: int = 23
    #: Frame rate hint for x264's rate control; timestamps come from the input.
    fps: int = 30
    #: x264 threads per session. One: sessions run in parallel, and on few cores slice threads
    #: cost more in wake-ups than they save (measured in benchmarks/live_bench.py).
    threads: int = 1
    #: Audio items held while no video frame arrives to mux them with; older ones are dropped.
    max_pending_audio: int = 256


class _Sink:
    """The muxer's file-like output: feeds the segmenter, forwards bytes and cuts."""

    def __init__(self, segmenter: TsSegmenter, on_data: Callable[[bytes], None], on_cut: Callable[[], None]) -> None:
        self._segmenter = segmenter
        self._on_data = on_data
        self._on_cut = on_cut
        self.bytes = 0
        #: False: the MPEG-TS bytes go nowhere (a session without trickle output).
        self.enabled = True

    def write(self, data: bytes | memoryview) -> int:
        if not self.enabled:
            self.bytes += len(data)
            return len(data)
        b = bytes(data)
        self.bytes += len(b)
        for item in self._segmenter.feed(b):
            if item is None:
                self._on_cut()
            else:
                self._on_data(item)
        return len(b)


class _Run:
    """One muxer and encoder: from the first frame, or a restart, to a size or audio change."""

    def __init__(
        self, config: EncoderConfig, width: int, height: int, audio: AudioSource | None, sink: _Sink
    ) -> None:
        self.width, self.height, self.audio = width, height, audio
        self.container = av.open(
            sink,
            "w",
            format="mpegts",
            options={
                "pat_period": "1000000",
                "sdt_period": "1000000",
                "flush_packets": "1",
                "max_interleave_delta": "500000",
                "pes_payload_size": "0",
            },
        )
        gop = max(1, round(config.fps * config.gop_seconds))
        self.video = self.container.add_stream(
            "libx264",
            rate=config.fps,
            options={
                "preset": config.preset,
                "profile": config.profile,
                "tune": "zerolatency",
                "bf": "0",
                "crf": str(config.crf),
                "forced-idr": "1",
                "sc_threshold": "0",
                "g": str(gop * 4),
                "threads": str(config.threads),
            },
        )
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.time_base = OUTPUT_TIME_BASE
        self.video.codec_context.time_base = OUTPUT_TIME_BASE
        self.audio_stream: av.audio.stream.AudioStream | av.stream.Stream | None = None
        if audio is not None:
            if audio.copy:
                self.audio_stream = self.container.add_mux_stream(audio.codec, rate=audio.sample_rate)
                self.audio_stream.time_base = OUTPUT_TIME_BASE
            else:
                stream = self.container.add_stream("aac", rate=48000)
                stream.layout = "stereo" if audio.channels > 1 else "mono"
                stream.bit_rate = 128_000
                self.audio_stream = stream
        self.last_video_pts: int | None = None
        self.last_key_pts: int | None = None
        self.last_audio_dts: int | None = None
        #: Encoded audio for the sinks: the first input audio time (90 kHz) and samples since.
        self.audio_anchor: int | None = None
        self.audio_samples = 0


class SegmentedEncoder:
    """Encodes frames to H.264 in MPEG-TS and emits standalone segments.

    `encode`/`close` run in one thread (the session's encode thread); `push_audio` and
    `set_audio_source` are called by the decoder thread.
    """

    def __init__(
        self,
        config: EncoderConfig,
        *,
        on_data: Callable[[bytes], None],
        on_cut: Callable[[], None],
        on_packet: Callable[[EncodedPacket], None] | None = None,
        ts_output: bool = True,
    ) -> None:
        self.config = config
        self._on_cut = on_cut
        #: Every encoded packet, before the MPEG-TS muxer takes it (the session's sink fan-out).
        self.on_packet = on_packet
        self._keyframe_requested = False
        self._segmenter = TsSegmenter()
        self._sink = _Sink(self._segmenter, on_data, on_cut)
        # Without a trickle output the muxer still runs (it times the audio and sets codec
        # parameters) but its bytes are not segmented.
        self._sink.enabled = ts_output
        self._run: _Run | None = None
        self._audio: deque[av.Packet | av.AudioFrame] = deque()
        self._audio_lock = threading.Lock()
        self._audio_source: AudioSource | None = None
        self._gop_ticks = round(config.gop_seconds / OUTPUT_TIME_BASE)
        self.frames = 0
        self.dropped_late = 0
        self.audio_dropped = 0
        self.restarts = 0

    # decoder thread
    def set_audio_source(self, source: AudioSource | None) -> None:
        self._audio_source = source

    def push_audio(self, item: av.Packet | av.AudioFrame) -> None:
        with self._audio_lock:
            self._audio.append(item)
            while len(self._audio) > self.config.max_pending_audio:
                self._audio.popleft()
                self.audio_dropped += 1

    @property
    def output_bytes(self) -> int:
        return self._sink.bytes

    # any thread
    def request_keyframe(self) -> None:
        """Make the next encoded frame an IDR (a new viewer or a reconnected push joins)."""
        self._keyframe_requested = True

    # encode thread
    def encode(self, frame: av.VideoFrame, pts: int) -> bool:
        """Encode one frame with output `pts` (90 kHz); False when dropped as out of order."""
        run = self._run
        source = self._audio_source
        source_key = source.key if source is not None else None
        run_key = run.audio.key if run is not None and run.audio is not None else None
        if run is None or (run.width, run.height) != (frame.width, frame.height) or run_key != source_key:
            if run is not None:
                self._end_run()
                self.restarts += 1
            run = self._run = _Run(self.config, frame.width, frame.height, source, self._sink)
        if run.last_video_pts is not None and pts <= run.last_video_pts:
            if run.last_video_pts - pts <= self._gop_ticks:
                self.dropped_late += 1
                return False
            # The input's clock restarted (a new source): restart too, output pts follow.
            self._end_run()
            self.restarts += 1
            run = self._run = _Run(self.config, frame.width, frame.height, source, self._sink)
        self._mux_audio(run)
        if run.last_key_pts is None or pts - run.last_key_pts >= self._gop_ticks or self._keyframe_requested:
            self._keyframe_requested = False
            frame.pict_type = PictureType.I
            run.last_key_pts = pts
        else:
            frame.pict_type = PictureType.NONE
        frame.pts = pts
        frame.time_base = OUTPUT_TIME_BASE
        packets = run.video.encode(frame)
        if self.on_packet is not None:
            for packet in packets:
                self._share_video(run, packet)
        run.container.mux(packets)
        run.last_video_pts = pts
        self.frames += 1
        return True

    def _share_video(self, run: _Run, packet: av.Packet) -> None:
        assert self.on_packet is not None
        if packet.pts is None:
            return
        dts = packet.dts if packet.dts is not None else packet.pts
        self.on_packet(
            EncodedPacket(
                "video",
                "h264",
                bytes(packet),
                packet.pts,
                dts,
                OUTPUT_TIME_BASE,
                keyframe=packet.is_keyframe,
                width=run.width,
                height=run.height,
            )
        )

    def _share_audio(self, run: _Run, packet: av.Packet, time_base: Fraction, *, copy: bool, pts: int | None = None) -> None:
        assert self.on_packet is not None and run.audio is not None
        if pts is None:
            pts = packet.pts
        if pts is None:
            return
        if copy:
            codec, rate, channels, extradata = run.audio.codec, run.audio.sample_rate, run.audio.channels, None
        else:
            ctx = run.audio_stream.codec_context  # type: ignore[union-attr]
            codec, rate, channels = "aac", ctx.sample_rate, ctx.channels
            extradata = bytes(ctx.extradata) if ctx.extradata else None
        dts = packet.dts if packet.dts is not None and copy else pts
        self.on_packet(
            EncodedPacket(
                "audio",
                codec,
                bytes(packet),
                pts,
                dts,
                time_base,
                sample_rate=rate,
                channels=channels,
                extradata=extradata,
                adts=copy and codec == "aac",
            )
        )

    def _mux_audio(self, run: _Run) -> None:
        with self._audio_lock:
            items = list(self._audio)
            self._audio.clear()
        stream = run.audio_stream
        if stream is None:
            return
        for item in items:
            if isinstance(item, av.Packet):
                if run.audio is None or not run.audio.copy:
                    continue
                if item.dts is None or item.time_base is None:
                    continue
                dts = round(item.dts * item.time_base / OUTPUT_TIME_BASE)
                if run.last_audio_dts is not None and dts <= run.last_audio_dts:
                    self.audio_dropped += 1
                    continue
                run.last_audio_dts = dts
                if self.on_packet is not None:
                    self._share_audio(run, item, item.time_base, copy=True)
                item.stream = stream
                run.container.mux(item)
            else:
                if run.audio is None or run.audio.copy:
                    continue
                if run.audio_anchor is None and item.pts is not None and item.time_base is not None:
                    run.audio_anchor = round(item.pts * item.time_base / OUTPUT_TIME_BASE)
                item.pts = None
                packets = stream.encode(item)  # type: ignore[union-attr]
                if self.on_packet is not None:
                    # The muxer times these packets itself; the sinks get the input's clock
                    # (first audio pts plus samples encoded), in step with the video pts.
                    ctx = stream.codec_context  # type: ignore[union-attr]
                    rate = ctx.sample_rate or 48000
                    for packet in packets:
                        pts = (run.audio_anchor or 0) + round(run.audio_samples * 90000 / rate)
                        run.audio_samples += ctx.frame_size or 1024
                        self._share_audio(run, packet, OUTPUT_TIME_BASE, copy=False, pts=pts)
                run.container.mux(packets)

    def _end_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.container.mux(run.video.encode(None))
            if run.audio_stream is not None and run.audio is not None and not run.audio.copy:
                run.container.mux(run.audio_stream.encode(None))  # type: ignore[union-attr]
        finally:
            run.container.close()
        self._segmenter.reset()
        self._on_cut()

    def close(self) -> None:
        """Flush the encoder and end the last segment at once (the stream is over)."""
        run = self._run
        if run is not None:
            self._mux_audio(run)
        self._end_run()


class Outbox:
    """Encoded output on its way to the egress task (loop side): bytes, `CUT` between
    segments, `END` after the last. Bounded: the producer awaits `wait_room()`."""

    CUT = object()
    END = object()

    def __init__(self, max_bytes: int) -> None:
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._bytes = 0
        self.max_bytes = max_bytes

    def extend(self, items: list[Any]) -> None:
        run: list[bytes] = []
        for item in [*items, None]:  # consecutive bytes are joined: one write downstream
            if isinstance(item, bytes):
                run.append(item)
                continue
            if run:
                data = b"".join(run) if len(run) > 1 else run[0]
                self._items.append(data)
                self._bytes += len(data)
                run = []
            if item is not None:
                self._items.append(item)
        if self._bytes > self.max_bytes:
            self._room.clear()
        if items:
            self._ready.set()

    def end(self) -> None:
        self.extend([self.END])

    async def get(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, bytes):
            self._bytes -= len(item)
            if self._bytes <= self.max_bytes // 2:
                self._room.set()
        return item

    async def wait_room(self) -> None:
        await self._room.wait()
