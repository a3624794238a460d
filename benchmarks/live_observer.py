"""What an outside observer of a live stream sees, for `benchmarks/live_bench.py`.

Nothing here imports the engine: the input is made by the ffmpeg binary, and the output is read
as bytes off a trickle channel, the way a gateway reads it.

- `make_input`: ffmpeg's own 1-second MPEG-TS segments (testsrc2 video, a 440 Hz sine with a
  1760 Hz beep at the start of every second), default muxing (several AAC frames per PES).
- `TsTimeline`: an incremental MPEG-TS reader. Fed bytes as they arrive, it records every PES
  (one video frame, or one PES of audio frames) with its pts/dts and the moment its last
  188-byte packet arrived. That moment is when a player could have the frame: a frame's
  last byte is what it waits for.
- `pace`: cuts each input segment at the end of every video frame, so a publisher can send
  frame k's bytes at its dts, as a live encoder and segmenter hand them out.
- `match_frames`: output video frames to input frames by pts (the engine keeps the input's
  90 kHz timestamps; the offset is searched, not assumed, and reported).
- `decode_video` / `decode_audio`, `content_check`, `beep_onsets`: PyAV decodes after the run
  (off the measured window): frames compared with the input frame of the same pts against its
  neighbours, audio duration, and where the beeps fall on the pts axis (A/V sync by content).
- `Input`, `Raw`, `analyse`: one input with what the output is compared with, what the gateway
  saw of one stream, and the figures drawn from it.
"""

from __future__ import annotations

import io
import logging
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

__all__ = [
    "AudioTrack",
    "Chunk",
    "FrameMatch",
    "Input",
    "PacedSegment",
    "PesUnit",
    "Raw",
    "TsTimeline",
    "analyse",
    "beep_onsets",
    "beep_shift",
    "content_check",
    "decode_audio",
    "decode_video",
    "make_input",
    "match_frames",
    "pace",
    "percentile",
    "reorder_floor",
]

log = logging.getLogger(__name__)

TS_PACKET = 188
CLOCK = 90_000
CARRIER_HZ = 440
BEEP_FACTOR = 4  # lavfi sine: a beep at 4x the carrier for 1/25 s at the start of every second
BEEP_HZ = CARRIER_HZ * BEEP_FACTOR


# --- input -----------------------------------------------------------------------------------


def make_input(
    seconds: int, *, width: int = 512, height: int = 512, fps: int = 30, audio: bool = True, bframes: bool = True
) -> list[bytes]:
    """`seconds` one-second MPEG-TS segments from the ffmpeg binary's segment muxer.

    Encoder and muxer settings are ffmpeg's defaults (libx264 with its B-frames, native AAC,
    several AAC frames per PES) apart from a 1 s closed GOP so every segment starts with a
    keyframe, as a gateway's segmenter cuts them; `bframes=False` adds `-bf 0`.
    """
    with tempfile.TemporaryDirectory(prefix="live-bench-input-") as tmp:
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
        ]
        if audio:
            cmd += ["-f", "lavfi", "-i", f"sine=frequency={CARRIER_HZ}:beep_factor={BEEP_FACTOR}:sample_rate=48000"]
        cmd += ["-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(fps), "-keyint_min", str(fps), "-sc_threshold", "0"]
        cmd += [] if bframes else ["-bf", "0"]
        cmd += ["-c:a", "aac"] if audio else ["-an"]
        cmd += ["-f", "segment", "-segment_time", "1", "-segment_format", "mpegts", str(Path(tmp) / "in%03d.ts")]
        subprocess.run(cmd, check=True, timeout=120)
        files = sorted(Path(tmp).glob("in*.ts"))
        return [f.read_bytes() for f in files]


# --- MPEG-TS timeline ------------------------------------------------------------------------


@dataclass
class PesUnit:
    """One PES: a video frame, or a run of audio frames."""

    kind: str  # "video", "audio" or "other"
    pts: int | None
    dts: int | None
    #: When its first and last TS packets arrived (the caller's clock), and the stream byte
    #: offset just past its last packet.
    start: float
    end: float
    end_offset: int
    size: int = 0


def _timestamp(b: bytes | bytearray | memoryview) -> int:
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def _kind(stream_id: int) -> str:
    if 0xE0 <= stream_id <= 0xEF:
        return "video"
    if 0xC0 <= stream_id <= 0xDF or stream_id == 0xBD:  # 0xBD: private stream 1 (Opus, AC-3)
        return "audio"
    return "other"


class TsTimeline:
    """Incremental MPEG-TS reader: PES units with timestamps and arrival times.

    A PES is complete when its PID starts the next one or the segment ends (`end_segment`);
    its `end` is the arrival time of its last TS packet.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._open: dict[int, PesUnit] = {}
        self.units: list[PesUnit] = []
        self.offset = 0
        self.resyncs = 0

    def feed(self, data: bytes, at: float) -> None:
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= TS_PACKET:
            if buf[pos] != 0x47:
                nxt = buf.find(b"\x47", pos + 1)
                self.resyncs += 1
                if nxt < 0:
                    pos = n
                    break
                self.offset += nxt - pos
                pos = nxt
                continue
            self._packet(memoryview(buf)[pos : pos + TS_PACKET], at)
            pos += TS_PACKET
            self.offset += TS_PACKET
        del buf[:pos]

    def end_segment(self) -> int:
        """The segment (a whole MPEG-TS file) is over: close its PES units. Returns the number of
        leftover bytes that did not make a whole TS packet (0 for a well-formed segment)."""
        left = len(self._buf)
        self.offset += left
        self._buf.clear()
        for unit in self._open.values():
            self.units.append(unit)
        self._open.clear()
        return left

    def _packet(self, pkt: memoryview, at: float) -> None:
        pid = (pkt[1] & 0x1F) << 8 | pkt[2]
        if pid == 0x1FFF:
            return
        pusi = pkt[1] & 0x40
        afc = (pkt[3] >> 4) & 0x3
        if not afc & 0x1:
            return
        start = 4 + (1 + pkt[4] if afc & 0x2 else 0)
        if start >= TS_PACKET:
            return
        payload = pkt[start:]
        end_offset = self.offset + TS_PACKET
        if pusi and len(payload) >= 9 and payload[0] == 0 and payload[1] == 0 and payload[2] == 1:
            previous = self._open.pop(pid, None)
            if previous is not None:
                self.units.append(previous)
            stream_id = payload[3]
            flags = payload[7]
            pts = dts = None
            if flags & 0x80 and len(payload) >= 14:
                pts = _timestamp(payload[9:14])
                if flags & 0x40 and len(payload) >= 19:
                    dts = _timestamp(payload[14:19])
            header = 9 + payload[8]
            self._open[pid] = PesUnit(_kind(stream_id), pts, dts, at, at, end_offset, max(0, len(payload) - header))
            return
        unit = self._open.get(pid)
        if unit is not None:
            unit.end = at
            unit.end_offset = end_offset
            unit.size += len(payload)

    def video(self) -> list[PesUnit]:
        return [u for u in self.units if u.kind == "video" and u.pts is not None]

    def audio(self) -> list[PesUnit]:
        return [u for u in self.units if u.kind == "audio" and u.pts is not None]


# --- pacing the input -----------------------------------------------------------------------


@dataclass
class Chunk:
    """Bytes to send at `at` seconds after the stream starts; they end video frames `frames`
    (input pts), which count as sent when this chunk is written."""

    at: float
    data: bytes
    frames: list[int]


@dataclass
class PacedSegment:
    chunks: list[Chunk]
    #: Seconds after the stream start when the segment is closed (the next one starts).
    end: float


def pace(segments: list[bytes], fps: int = 30) -> tuple[list[PacedSegment], list[int]]:
    """Cut every segment after each video frame's last TS packet; frame k goes out at its dts.

    Returns the paced segments and every input video pts in send order.
    """
    per_segment: list[list[PesUnit]] = []
    for data in segments:
        timeline = TsTimeline()
        timeline.feed(data, 0.0)
        timeline.end_segment()
        per_segment.append(sorted(timeline.video(), key=lambda u: u.end_offset))
    first = min(_decode_time(u) for units in per_segment for u in units)
    paced: list[PacedSegment] = []
    order: list[int] = []
    for data, units in zip(segments, per_segment, strict=True):
        chunks: list[Chunk] = []
        cut = 0
        for unit in units:
            assert unit.pts is not None
            chunks.append(Chunk((_decode_time(unit) - first) / CLOCK, data[cut : unit.end_offset], [unit.pts]))
            order.append(unit.pts)
            cut = unit.end_offset
        if cut < len(data):  # audio after the last frame: goes with that frame
            if chunks:
                chunks[-1].data += data[cut:]
            else:
                chunks.append(Chunk(0.0, data[cut:], []))
        paced.append(PacedSegment(chunks, 0.0))
    for i, seg in enumerate(paced):
        nxt = paced[i + 1].chunks[0].at if i + 1 < len(paced) and paced[i + 1].chunks else None
        seg.end = nxt if nxt is not None else (seg.chunks[-1].at + 1 / fps if seg.chunks else 0.0)
    return paced, order


def _decode_time(unit: PesUnit) -> int:
    value = unit.dts if unit.dts is not None else unit.pts
    assert value is not None
    return value


# --- matching -------------------------------------------------------------------------------


@dataclass
class FrameMatch:
    """Output video frames matched to input frames by pts."""

    #: Output pts minus input pts (90 kHz ticks); 0 when the engine keeps timestamps.
    pts_offset: int | None
    matched: dict[int, float] = field(default_factory=dict)  # input pts -> delay (s)
    repeated: int = 0
    unmatched: int = 0
    out_of_order: int = 0
    first_output_at: float | None = None


def match_frames(sent: dict[int, float], out_video: Iterable[PesUnit]) -> FrameMatch:
    """Match output frames to input frames by pts; delay = last byte out - input frame sent.

    The pts offset is the one that matches most output frames, searched among the first
    output frames against every input pts (so a shifted clock is found and reported, not
    mistaken for drops).
    """
    outs = [u for u in out_video if u.pts is not None]
    result = FrameMatch(None)
    if not outs:
        return result
    result.first_output_at = min(u.end for u in outs)
    in_pts = set(sent)
    candidates = {u.pts - p for u in outs[:8] for p in in_pts if u.pts is not None}
    best = max(candidates, key=lambda d: (sum(1 for u in outs if u.pts is not None and u.pts - d in in_pts), -abs(d)), default=0)
    result.pts_offset = best
    last = None
    for unit in outs:
        assert unit.pts is not None
        p = unit.pts - best
        if last is not None and unit.pts <= last:
            result.out_of_order += 1
        last = unit.pts
        if p not in in_pts:
            result.unmatched += 1
        elif p in result.matched:
            result.repeated += 1
        else:
            result.matched[p] = unit.end - sent[p]
    return result


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def reorder_floor(sent: dict[int, float]) -> dict[int, float]:
    """Per input frame, how long after its own bytes a decoder could at best show it: frames
    are shown in pts order, so frame p waits for every frame with a lower pts (B-frames come
    after the frames they reference). A property of the input, not of the engine."""
    floor: dict[int, float] = {}
    latest = float("-inf")
    for p in sorted(sent):
        latest = max(latest, sent[p])
        floor[p] = latest - sent[p]
    return floor


# --- decoding (after the run) ----------------------------------------------------------------


def _decoded(container: Any, stream: Any) -> Iterator[Any]:
    """The decoded frames of `stream`; a packet that does not decode (a capture that starts
    mid-stream) is skipped, with a debug log."""
    for packet in container.demux(stream):
        try:
            decoded = packet.decode()
        except av.error.InvalidDataError as exc:
            log.debug("%s packet at pts %s does not decode, skipped: %s", stream.type, packet.pts, exc)
            continue
        yield from decoded


def decode_video(data: bytes, size: int = 64) -> dict[int, np.ndarray]:
    """pts (stream time base, 90 kHz for MPEG-TS) -> a `size`x`size` luma thumbnail."""
    frames: dict[int, np.ndarray] = {}
    if not data:
        return frames
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        if not container.streams.video:
            return frames
        for frame in _decoded(container, container.streams.video[0]):
            if frame.pts is not None:
                thumb = frame.reformat(width=size, height=size, format="gray").to_ndarray()
                frames[int(frame.pts)] = thumb.astype(np.float32)
    return frames


def content_check(out: dict[int, np.ndarray], inp: dict[int, np.ndarray], pts_offset: int, step: int) -> tuple[int, int]:
    """(frames checked, frames that look most like the input frame of their pts rather than
    the one before or after): the pts match is the picture match."""
    checked = verified = 0
    for q, thumb in out.items():
        p = q - pts_offset
        if p not in inp:
            continue
        checked += 1
        own = float(np.abs(thumb - inp[p]).mean())
        neighbours = [float(np.abs(thumb - inp[n]).mean()) for n in (p - step, p + step) if n in inp]
        if all(own < other for other in neighbours):
            verified += 1
    return checked, verified


@dataclass
class AudioTrack:
    codec: str | None = None
    sample_rate: int = 0
    channels: int = 0
    #: Sum of decoded frame durations (s).
    duration: float = 0.0
    first_pts: float | None = None  # seconds
    frames: int = 0
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: Each sample's presentation time (s), from its frame's pts.
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))


def decode_audio(data: bytes) -> AudioTrack:
    track = AudioTrack()
    if not data:
        return track
    samples: list[np.ndarray] = []
    times: list[np.ndarray] = []
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        if not container.streams.audio:
            return track
        stream = container.streams.audio[0]
        track.codec = stream.codec_context.name
        for frame in _decoded(container, stream):
            rate = frame.sample_rate or 48000
            track.sample_rate, track.channels = rate, len(frame.layout.channels)
            track.frames += 1
            track.duration += frame.samples / rate
            if frame.pts is None or frame.time_base is None:
                continue
            start = float(frame.pts * frame.time_base)
            if track.first_pts is None:
                track.first_pts = start
            mono = frame.to_ndarray().astype(np.float32)
            mono = mono.reshape(-1, frame.samples)[0] if frame.format.is_planar else mono.reshape(frame.samples, -1)[:, 0]
            samples.append(mono)
            times.append(start + np.arange(frame.samples, dtype=np.float64) / rate)
    if samples:
        track.samples = np.concatenate(samples)
        track.times = np.concatenate(times)
    return track


def beep_onsets(track: AudioTrack, window_s: float = 0.005) -> list[float]:
    """Presentation times (s) where the 1760 Hz beep starts: a sliding DFT bin over
    `window_s`, centred, crosses half its peak (the onset itself, for a rectangular window)."""
    x, t = track.samples, track.times
    rate = track.sample_rate
    if x.size < rate // 10 or not rate:
        return []
    w = max(8, int(rate * window_s))
    phase = np.exp(-2j * np.pi * BEEP_HZ * np.arange(x.size) / rate)
    csum = np.concatenate([[0], np.cumsum(x * phase)])
    mag = np.abs(csum[w:] - csum[:-w]) / w  # window [i, i+w)
    peak = float(mag.max())
    if peak <= 0:
        return []
    above = mag > peak / 2
    rises = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    onsets: list[float] = []
    for i in rises:
        centre = min(x.size - 1, int(i) + w // 2)
        when = float(t[centre])
        if not onsets or when - onsets[-1] > 0.5:
            onsets.append(when)
    return onsets


def beep_shift(inp: list[float], out: list[float]) -> float | None:
    """Median of (output onset - nearest input onset), seconds: how far the output's audio
    content moved against its own timestamps (video keeps its pts, so this is the A/V error)."""
    if not inp or not out:
        return None
    arr = np.asarray(inp)
    shifts = [o - float(arr[np.argmin(np.abs(arr - o))]) for o in out]
    shifts = [s for s in shifts if abs(s) < 0.5]
    return float(np.median(shifts)) if shifts else None


# --- one stream, as the gateway saw it ----------------------------------------------------


@dataclass
class Input:
    """One ffmpeg-made input, paced, with what the analysis compares the output with."""

    segments: list[bytes]
    paced: list[PacedSegment]
    frames: int
    video: dict[int, np.ndarray]
    audio: AudioTrack
    onsets: list[float]

    fps: int = 30

    @classmethod
    def make(
        cls, seconds: int, *, audio: bool, bframes: bool = True, width: int = 512, height: int = 512, fps: int = 30
    ) -> Input:
        return cls.of(make_input(seconds, width=width, height=height, fps=fps, audio=audio, bframes=bframes), fps)

    @classmethod
    def of(cls, segments: list[bytes], fps: int = 30) -> Input:
        paced, order = pace(segments, fps)
        data = b"".join(segments)
        track = decode_audio(data)
        return cls(segments, paced, len(order), decode_video(data), track, beep_onsets(track), fps)

    def head(self, seconds: int) -> Input:
        """The first `seconds` segments."""
        return self if seconds >= len(self.segments) else Input.of(self.segments[:seconds], self.fps)


@dataclass
class Raw:
    """What the gateway side saw of one stream: the publisher fills `sent` (input pts -> when
    its last byte was written), the output reader `timeline` and `output`."""

    mid: str
    t_post: float
    post_status: int = 0
    post_seconds: float = 0.0
    sent: dict[int, float] = field(default_factory=dict)
    timeline: TsTimeline = field(default_factory=TsTimeline)
    output: list[bytes] = field(default_factory=list)
    leftover_bytes: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: float | None = None
    input_end: float | None = None
    output_closed: float | None = None
    errors: list[str] = field(default_factory=list)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def analyse(raw: Raw, stream: Input, *, spawned: float) -> dict[str, Any]:
    """Numbers from one stream's bytes (after the engine has exited: PyAV decodes here)."""
    match = match_frames(raw.sent, raw.timeline.video())
    matched = sorted(match.matched)
    delays = [match.matched[p] for p in matched]
    floor = reorder_floor(raw.sent)
    over_floor = [match.matched[p] - floor[p] for p in matched]
    data = b"".join(raw.output)
    out_audio = decode_audio(data)
    out_video = decode_video(data)
    checked = verified = 0
    if match.pts_offset is not None:
        checked, verified = content_check(out_video, stream.video, match.pts_offset, CLOCK // stream.fps)
    in_v0 = min(stream.video) / CLOCK if stream.video else None
    out_v0 = min(out_video) / CLOCK if out_video else None
    av_offset = None
    if None not in (in_v0, out_v0, stream.audio.first_pts, out_audio.first_pts):
        assert in_v0 is not None and out_v0 is not None and stream.audio.first_pts is not None
        assert out_audio.first_pts is not None
        av_offset = (out_audio.first_pts - out_v0) - (stream.audio.first_pts - in_v0)
    shift = beep_shift(stream.onsets, beep_onsets(out_audio)) if stream.onsets else None
    final: dict[str, Any] = next((e.get("event", e) for e in reversed(raw.events) if e.get("event", e).get("type") == "status"), {})
    first = match.first_output_at
    return {
        "mid": raw.mid,
        "errors": raw.errors,
        "frames_in": len(raw.sent),
        "frames_in_file": stream.frames,
        "frames_out": len(raw.timeline.video()),
        "frames_matched": len(match.matched),
        "dropped": len(raw.sent) - len(match.matched),
        "repeated": match.repeated,
        "unmatched": match.unmatched,
        "out_of_order": match.out_of_order,
        "pts_offset_ticks": match.pts_offset,
        "content_checked": checked,
        "content_verified": verified,
        "delay_ms": {f"p{q}": _ms(percentile(delays, q)) for q in (50, 90, 99)} | {"max": _ms(max(delays, default=None))},
        "delay_first_frame_ms": _ms(delays[0]) if delays else None,
        "input_reorder_wait_ms": {f"p{q}": _ms(percentile(list(floor.values()), q)) for q in (50, 99)},
        "delay_over_floor_ms": {f"p{q}": _ms(percentile(over_floor, q)) for q in (50, 99)},
        "delays_ms": [_ms(d) for d in delays],
        "post_ms": _ms(raw.post_seconds),
        "post_to_first_frame_ms": _ms(first - raw.t_post) if first is not None else None,
        "spawn_to_first_frame_ms": _ms(first - spawned) if first is not None else None,
        "input_end_to_output_closed_ms": _ms(raw.output_closed - raw.input_end)
        if raw.output_closed is not None and raw.input_end is not None
        else None,
        "output_segments": len(raw.output),
        "output_bytes": len(data),
        "leftover_bytes": raw.leftover_bytes,
        "ts_resyncs": raw.timeline.resyncs,
        # the whole input's audio; for a start-up stream (stopped early) only a part was sent
        "audio_in_s": round(stream.audio.duration, 3) if len(raw.sent) == stream.frames else None,
        "audio_out_s": round(out_audio.duration, 3),
        "audio_out_codec": out_audio.codec,
        "audio_out_rate": out_audio.sample_rate,
        "av_offset_ms": _ms(av_offset),
        "beep_shift_ms": _ms(shift),
        "beeps_in": len(stream.onsets),
        "beeps_out": len(beep_onsets(out_audio)),
        "engine_cpu_s": raw.cpu_seconds,
        "engine_cpu_ms_per_frame": round(raw.cpu_seconds / len(match.matched) * 1000, 2)
        if raw.cpu_seconds is not None and match.matched
        else None,
        "engine_status": {  # the engine's own figures: diagnosis only
            k: final.get(k)
            for k in ("frames_in", "frames_out", "dropped_frames", "e2e_latency_ms", "time_to_first_frame_ms", "end_reason", "error")
            if k in final
        },
    }
