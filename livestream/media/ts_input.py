"""MPEG-TS segments in, decoded video frames and timed audio out (one decode thread).

The ingest task writes each trickle segment's bytes into a `SegmentPipe` as they arrive; a
`SegmentDecoder` thread opens one demuxer per segment on it (a file-like object, no OS pipes)
and decodes while the segment is still arriving. Each segment is a standalone MPEG-TS chunk
starting with a keyframe, so a corrupt one is skipped alone and a resolution change needs
nothing special.

Audio is timed here, not by the demuxer: encoders pack several audio frames into one PES with a
timestamp only on the first, and a demuxer opened without probing (as here, to start at the
first bytes) cannot time the rest. An `AudioClock` carries the stream's audio time from frame
to frame (and across segments), so every frame gets its timestamp from the frame headers.
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

from .audio_frames import frame_samples
from .packets import AUDIO_COPY_CODECS, OUTPUT_TIME_BASE, AudioSource, EncodedPacket

__all__ = ["AudioClock", "SegmentDecoder", "SegmentPipe"]

log = logging.getLogger(__name__)

_TS_PACKET = 188


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


#: Decoder names the demuxer gives copyable codecs, to the codec they are.
_COPY_NAMES = {"mp3float": "mp3", "mp2float": "mp2"}


def _is_loas(packet: av.Packet[Stream]) -> bool:
    """The packet starts with LOAS's 11-bit sync word (0x2B7): AAC in LATM."""
    head = bytes(packet)[:2]
    return len(head) == 2 and head[0] == 0x56 and head[1] & 0xE0 == 0xE0


class AudioClock:
    """The input audio's time on the 90 kHz clock, carried from frame to frame.

    `stamp(pts, samples, rate)` returns the frame's timestamp: its own when it has one, else
    where the previous frame ended. A jump of more than a second from that expectation (a new
    source clock) is taken as it is.
    """

    def __init__(self) -> None:
        self.next_pts: int | None = None

    def stamp(self, pts: int | None, samples: int, rate: int) -> int | None:
        if pts is None:
            pts = self.next_pts
        if pts is None:
            return None
        self.next_pts = pts + round(samples * 90000 / rate) if rate > 0 else None
        return pts


def _ticks(value: int | None, time_base: Fraction | None) -> int | None:
    if value is None or time_base is None:
        return None
    return round(value * time_base / OUTPUT_TIME_BASE)


class SegmentDecoder:
    """Decodes the segments of a `SegmentPipe` in its own thread (`run`).

    Video frames go to `on_video(frame, arrival)`. Audio goes to `on_audio`, timed on the 90 kHz
    clock: `EncodedPacket`s when the codec is copied (`AudioSource.copy`), decoded frames (pts
    on `time_base` 1/90000) otherwise.
    """

    #: Demuxer options: start decoding after the first TS packets instead of probing seconds.
    OPEN_OPTIONS = {"probesize": "32", "analyzeduration": "0"}

    def __init__(
        self,
        pipe: SegmentPipe,
        *,
        on_video: Callable[[av.VideoFrame, float], None],
        on_audio: Callable[[EncodedPacket | av.AudioFrame], None],
        on_audio_source: Callable[[AudioSource | None], None],
        on_error: Callable[[str], None],
        on_segment: Callable[[int], None] | None = None,
        threads: int = 1,
    ) -> None:
        self._pipe = pipe
        self.threads = threads
        self._on_video = on_video
        self._on_audio = on_audio
        self._on_audio_source = on_audio_source
        self._on_error = on_error
        self._on_segment = on_segment
        self._clock = AudioClock()
        self.segments = 0
        self.bad_segments = 0
        self.decode_errors = 0
        self.audio_untimed = 0
        self._latm: av.AudioCodecContext | None = None

    def run(self) -> None:
        while self._pipe.begin_segment():
            self.segments += 1
            try:
                self._decode_segment()
            finally:
                self._pipe.finish_segment()
            if self._on_segment is not None:
                self._on_segment(self.segments)

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
            decoder: av.AudioCodecContext | None = None
            if audio is not None:
                name = _COPY_NAMES.get(audio.codec_context.name, audio.codec_context.name)
                source = AudioSource(
                    codec=name,
                    sample_rate=audio.codec_context.sample_rate or 0,
                    channels=audio.codec_context.channels or 0,
                    copy=name in AUDIO_COPY_CODECS,
                )
                if not source.copy:
                    decoder = audio.codec_context
            self._on_audio_source(source)
            # One decoding thread per session, as for the encoder (sessions run in parallel).
            video.codec_context.thread_count = self.threads
            # A stream the demuxer could not name without probing (AAC in LATM): read its PES.
            unnamed = [s for s in container.streams if s.type not in ("video", "audio")] if audio is None else []
            streams = [s for s in (video, audio, *unnamed) if s is not None]
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
                    elif packet.size and source is not None:
                        errors += self._audio_packet(packet, source, decoder)
                    elif packet.size and _is_loas(packet):
                        errors += self._latm_packet(packet)
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

    def _latm_packet(self, packet: av.Packet[Stream]) -> int:
        """A whole PES of AAC in LATM/LOAS: split by the parser, decoded, timed."""
        if self._latm is None:
            self._latm = av.CodecContext.create("aac_latm", "r")  # type: ignore[assignment]
            self._on_audio_source(AudioSource("aac_latm", 0, 0, copy=False))
        assert self._latm is not None
        errors = 0
        pts = _ticks(packet.pts, packet.time_base)
        try:
            frames = [frame for part in self._latm.parse(bytes(packet)) for frame in self._latm.decode(part)]
        except av.InvalidDataError:
            return 1
        for frame in frames:
            stamped = self._clock.stamp(pts, frame.samples, frame.sample_rate)
            pts = None  # the PES's timestamp belongs to its first frame
            if stamped is None:
                self.audio_untimed += 1
                continue
            frame.pts, frame.time_base = stamped, OUTPUT_TIME_BASE
            self._on_audio(frame)
        return errors

    def _audio_packet(self, packet: av.Packet[Stream], source: AudioSource, decoder: av.AudioCodecContext | None) -> int:
        """Time one audio packet (copy) or its decoded frames; returns the errors counted."""
        pts = _ticks(packet.pts, packet.time_base)
        if decoder is None:
            data = bytes(packet)
            info = frame_samples(source.codec, data)
            if info is None:
                return 1
            samples, rate = info
            stamped = self._clock.stamp(pts, samples, rate)
            if stamped is None:
                self.audio_untimed += 1
                return 0
            self._on_audio(
                EncodedPacket(
                    "audio",
                    source.codec,
                    data,
                    stamped,
                    stamped,
                    OUTPUT_TIME_BASE,
                    sample_rate=rate,
                    channels=source.channels or 2,
                    adts=source.codec == "aac",
                    duration=round(samples * 90000 / rate),
                )
            )
            return 0
        try:
            frames = decoder.decode(packet)
        except av.InvalidDataError:
            return 1
        for frame in frames:
            stamped = self._clock.stamp(_ticks(frame.pts, frame.time_base) if frame.pts is not None else pts, frame.samples, frame.sample_rate)
            pts = None  # a packet's timestamp belongs to its first frame
            if stamped is None:
                self.audio_untimed += 1
                continue
            frame.pts = stamped
            frame.time_base = OUTPUT_TIME_BASE
            self._on_audio(frame)
        return 0
