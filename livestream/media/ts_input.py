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

from .audio_frames import frame_samples, opus_ts_packets
from .packets import AUDIO_COPY_CODECS, OUTPUT_TIME_BASE, AudioSource, EncodedPacket
from .ts_demux import PesUnit, TsDemuxer

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

    def has_room(self) -> bool:
        return self._room.is_set()

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


class AudioClock:
    """The input audio's time on the 90 kHz clock, carried from frame to frame.

    `stamp(pts, samples, rate)` returns the frame's timestamp: its own when it has one, else
    where the previous frame ended.
    """

    def __init__(self) -> None:
        self.next_pts: int | None = None

    def stamp(self, pts: int | None, samples: int, rate: int) -> int | None:
        duration = round(samples * 90000 / rate) if rate > 0 else 0
        if pts is None:
            pts = self.next_pts
        if pts is None:
            return None
        self.next_pts = pts + duration if rate > 0 else None
        return pts


#: More unparsed bytes than any audio frame has: the parser dropped them, nothing is carried.
_MAX_CARRY = 8192


class _AudioTrack:
    """One input audio stream: a parser that splits its PES into frames, and a decoder when it
    is transcoded. Kept across segments (audio PES do not follow segment boundaries)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.copy = codec in AUDIO_COPY_CODECS
        self.parser = av.CodecContext.create(codec, "r")
        #: Bytes given to the parser and bytes it returned as frames: the difference is the
        #: start of a frame that the next PES completes (a PES cut mid-frame).
        self.fed = self.parsed = 0
        if codec == "opus":  # TS carries no OpusHead: stereo, family 0 (RFC 7845)
            self.parser.extradata = b"OpusHead\x01\x02\x00\x00\x80\xbb\x00\x00\x00\x00\x00"
        self.decoder: av.AudioCodecContext | None = None if self.copy else self.parser  # type: ignore[assignment]


def _trimmed(frames: list[av.AudioFrame], start: int, end: int) -> list[av.AudioFrame]:
    """`frames` without their first `start` and last `end` samples (Opus pre-skip and end trim)."""
    out = []
    for i, frame in enumerate(frames):
        cut_start = min(start, frame.samples)
        start -= cut_start
        cut_end = min(end, frame.samples - cut_start) if i == len(frames) - 1 else 0
        if cut_start == 0 and cut_end == 0:
            out.append(frame)
            continue
        kept = frame.samples - cut_start - cut_end
        if kept <= 0:
            continue
        samples = frame.to_ndarray()
        width = 1 if frame.format.is_planar else len(frame.layout.channels)  # packed: interleaved
        cut = samples[:, cut_start * width : (cut_start + kept) * width]
        trimmed = av.AudioFrame.from_ndarray(cut.copy(), format=frame.format.name, layout=frame.layout.name)
        trimmed.sample_rate = frame.sample_rate
        out.append(trimmed)
    return out


def _mpeg_audio_name(data: bytes) -> str:
    """mp2 or mp3, by the frame header's layer (stream types 0x03/0x04 carry either)."""
    return "mp3" if len(data) > 1 and (data[1] >> 1) & 3 == 1 else "mp2"


class SegmentDecoder:
    """Decodes the segments of a `SegmentPipe` in its own thread (`run`).

    Video frames go to `on_video(frame, arrival)`. Audio goes to `on_audio`, timed on the 90 kHz
    clock: `EncodedPacket`s when the codec is copied (`AudioSource.copy`), decoded frames (pts
    on `time_base` 1/90000) otherwise.
    """

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
        self._demuxer = TsDemuxer()
        self._clock = AudioClock()
        self._audio: dict[int, _AudioTrack] = {}
        self._video: av.VideoCodecContext | None = None
        #: The previous segment's decoder, drained and reset: reused when the codec is the same.
        self._spare: av.VideoCodecContext | None = None
        self._errors = 0
        self.segments = 0
        self.bad_segments = 0
        self.decode_errors = 0
        self.audio_untimed = 0

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
        index, demuxer = self.segments, self._demuxer
        bad_before = demuxer.bad_packets
        self._errors = 0
        self._video = None
        audio_seen: set[int] = set()
        while data := self._pipe.read():
            for unit in demuxer.feed(data):
                self._unit(unit, audio_seen)
        for unit in demuxer.end_segment():
            self._unit(unit, audio_seen)
        video, self._video = self._video, None
        if video is not None:
            self._emit_video(video, None)
            # Drained; reset and kept for the next segment (a fresh decoder each segment costs
            # its buffer pools, zeroed page by page). One that failed is not reused.
            if not self._errors:
                video.flush_buffers()
                self._spare = video
        if not any(s.kind == "video" for s in demuxer.streams.values()) or (video is None and not audio_seen):
            self.bad_segments += 1
            what = "no video stream" if demuxer.streams else "not decodable MPEG-TS"
            if demuxer.bad_packets > bad_before and not demuxer.streams:
                what += f" ({demuxer.bad_packets - bad_before} packets without a sync byte)"
            self._on_error(f"input segment {index} skipped: {what}")
            return
        if not audio_seen and not any(s.kind == "audio" for s in demuxer.streams.values()):
            self._on_audio_source(None)
        if self._errors:
            self.decode_errors += self._errors
            self._on_error(f"input segment {index}: {self._errors} undecodable packet(s) skipped")
        if self._pipe.segment_bytes % _TS_PACKET:
            self._on_error(f"input segment {index} truncated ({self._pipe.segment_bytes} bytes)")

    def _unit(self, unit: PesUnit, audio_seen: set[int]) -> None:
        if unit.stream.kind == "video":
            if self._video is None and self._spare is not None:
                spare, self._spare = self._spare, None
                if spare.name == unit.stream.codec:
                    self._video = spare
            if self._video is None:
                try:
                    self._video = av.CodecContext.create(unit.stream.codec, "r")  # type: ignore[assignment]
                except (av.FFmpegError, ValueError) as exc:
                    self._on_error(f"no decoder for {unit.stream.codec} video: {exc}")
                    return
                assert self._video is not None
                # One decoding thread per session, as for the encoder (sessions run in parallel).
                self._video.thread_count = self.threads
            packet = av.Packet(unit.payload)
            packet.pts, packet.dts, packet.time_base = unit.pts, unit.dts, OUTPUT_TIME_BASE
            self._emit_video(self._video, packet)
            return
        pid = unit.stream.pid
        if pid not in audio_seen:
            audio_seen.add(pid)
            track = self._audio.get(pid)
            if track is None or track.codec != unit.stream.codec:
                try:
                    track = self._audio[pid] = _AudioTrack(unit.stream.codec)
                except (av.FFmpegError, ValueError) as exc:
                    self._on_error(f"{unit.stream.codec} audio cannot be read ({exc}); the output has no audio")
                    return
            self._on_audio_source(AudioSource(unit.stream.codec, 0, 0, copy=track.copy))
        track = self._audio.get(pid)
        if track is not None:
            self._audio_unit(track, unit)

    def _emit_video(self, ctx: av.VideoCodecContext, packet: av.Packet[Stream] | None) -> None:
        try:
            frames = ctx.decode(packet)
        except av.EOFError:
            return
        except av.InvalidDataError:
            self._errors += 1
            return
        for frame in frames:
            if frame.time_base is None:
                frame.time_base = OUTPUT_TIME_BASE
            self._on_video(frame, self._pipe.last_arrival)

    def _audio_unit(self, track: _AudioTrack, unit: PesUnit) -> None:
        """One PES of audio: split into frames, each timed (the PES's pts is the first frame that
        starts in it; a frame it only completes follows the previous one)."""
        pending = unit.pts
        if track.fed - track.parsed > _MAX_CARRY:  # bytes the parser dropped as junk
            track.fed = track.parsed
        carried = track.fed - track.parsed
        parts: list[tuple[av.Packet[Stream], int, int]]
        if track.codec == "opus":  # Opus in TS: packets behind control headers, with trims
            parts = [(av.Packet(data), start, end) for data, start, end in opus_ts_packets(unit.payload)]
        else:
            track.fed += len(unit.payload)
            try:
                parts = [(part, 0, 0) for part in track.parser.parse(unit.payload)]
            except av.InvalidDataError:
                self._errors += 1
                return
        for part, start_trim, end_trim in parts:
            if track.codec != "opus":
                track.parsed += part.size
            if carried > 0:
                carried -= part.size
                pts = None
            else:
                pts, pending = pending, None
            if track.decoder is None:
                data = bytes(part)
                codec = _mpeg_audio_name(data) if track.codec == "mp3" else track.codec
                info = frame_samples(codec, data)
                if info is None:
                    self._errors += 1
                    continue
                samples, rate = info
                stamped = self._clock.stamp(pts, samples, rate)
                if stamped is None:
                    self.audio_untimed += 1
                    continue
                self._on_audio(
                    EncodedPacket(
                        "audio",
                        codec,
                        data,
                        stamped,
                        stamped,
                        OUTPUT_TIME_BASE,
                        sample_rate=rate,
                        channels=2,
                        adts=codec == "aac",
                        duration=round(samples * 90000 / rate),
                    )
                )
                continue
            try:
                frames = track.decoder.decode(part)
            except av.InvalidDataError:
                self._errors += 1
                continue
            if start_trim or end_trim:
                frames = _trimmed(frames, start_trim, end_trim)
                if pts is not None:
                    pts += round(start_trim * 90000 / 48000)
            for frame in frames:
                stamped = self._clock.stamp(pts, frame.samples, frame.sample_rate)
                pts = None  # a packet's timestamp belongs to its first frame
                if stamped is None:
                    self.audio_untimed += 1
                    continue
                frame.pts, frame.time_base = stamped, OUTPUT_TIME_BASE
                self._on_audio(frame)
