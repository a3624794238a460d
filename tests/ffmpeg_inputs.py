"""Test inputs made by the ffmpeg binary (not by our own muxing code), and the measurements a
user makes on a stream: audio duration, video frame count, and A/V sync from a beep played at
the same instant as a white flash.

Why the ffmpeg binary: its MPEG-TS muxer packs several audio frames into one PES with a PTS only
on the first (the default `pes_payload_size` of 2930 bytes), as go-livepeer's segmenter and OBS
do. `livestream.live.testsrc` writes one frame per PES, so inputs made there never show what a
demuxer must do with the frames after the first.

The MPEG-TS parser here is deliberately tiny and independent of FFmpeg: it is how the tests
check that an input really has the layout they claim (frames per PES, a segment starting in the
middle of an audio PES).

Shared by `tests/live` and `tests/rtmp`: `tests/` is on `sys.path` (its `conftest.py`).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

__all__ = [
    "FFMPEG",
    "AvSource",
    "Measured",
    "PesLayout",
    "audio_pes_layout",
    "cut_at_keyframes",
    "frame_samples",
    "make_flv",
    "make_ts_segments",
    "measure",
    "ts_streams",
    "viewer_problems",
]

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"

TS = 188
PAT_PID = 0x0000
SDT_PID = 0x0011

#: MPEG-TS stream types of the audio codecs made here (ISO 13818-1 table 2-34; 0x06 is PES
#: private data, which FFmpeg uses for Opus with an "Opus" registration descriptor).
AUDIO_STREAM_TYPES = {0x03: "mp2/mp3", 0x04: "mp2/mp3", 0x0F: "aac", 0x11: "aac_latm", 0x06: "private"}

#: Samples per frame of each codec: one frame is the finest an audio timeline can move.
FRAME_SAMPLES = {"aac": 1024, "aac_latm": 1024, "mp3": 1152, "mp3float": 1152, "mp2": 1152, "opus": 960}


def frame_samples(codec: str) -> int:
    return FRAME_SAMPLES.get(codec, 1024)


# --- making inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AvSource:
    """An A/V test source: ffmpeg's testsrc2 pattern and a quiet 440 Hz tone, with a white frame
    (`flash_frames` long) and a loud 1 kHz beep at the same instant `marker`.

    `start` shifts the source's clock (the `-output_ts_offset`): a source cut in two parts that
    follow each other in time. `marker` is in seconds from the start of the whole source."""

    seconds: float = 4.0
    size: int = 128
    fps: int = 30
    rate: int = 48000
    channels: int = 2
    #: aac (ADTS) | latm | mp3 | mp2 | opus
    codec: str = "aac"
    marker: float = 2.5
    start: float = 0.0
    flash_frames: int = 3
    #: libx264 GOP in frames (also the segment length: segments are cut at keyframes).
    gop: int = 30
    #: Audio bitrate; None: 128k stereo, 64k mono.
    audio_bitrate: str | None = None

    @property
    def expected_codec(self) -> str:
        """The decoder FFmpeg picks for this source's audio."""
        return {"latm": "aac_latm", "mp3": "mp3float"}.get(self.codec, self.codec)

    def input_args(self) -> list[str]:
        """ffmpeg `-f lavfi -i ...` twice: video (input 0) and audio (input 1)."""
        local = self.marker - self.start
        # Half a frame either side: the frames at `local`, ... `flash_frames` later are white.
        flash = f"between(t,{local - 0.5 / self.fps:.6f},{local + (self.flash_frames - 0.5) / self.fps:.6f})"
        video = (
            f"testsrc2=size={self.size}x{self.size}:rate={self.fps}:duration={self.seconds},"
            f"drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='{flash}'"
        )
        # Times in aevalsrc are sample-exact: the beep starts on the sample at `local` seconds.
        beep = f"0.1*sin(2*PI*440*t)+0.6*sin(2*PI*1000*t)*gte(t,{local:.6f})*lt(t,{local + 0.1:.6f})"
        layout = "stereo" if self.channels == 2 else "mono"
        expr = "|".join([beep] * self.channels)
        audio = f"aevalsrc='{expr}':s={self.rate}:c={layout}:d={self.seconds}"
        return ["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio]

    def codec_args(self) -> list[str]:
        video = [
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1",
            "-g", str(self.gop), "-keyint_min", str(self.gop), "-sc_threshold", "0",
        ]  # fmt: skip
        bitrate = self.audio_bitrate or ("128k" if self.channels == 2 else "64k")
        encoder = {"aac": "aac", "latm": "aac", "mp3": "libmp3lame", "mp2": "mp2", "opus": "libopus"}[self.codec]
        audio = ["-c:a", encoder, "-b:a", bitrate, "-ar", str(self.rate), "-ac", str(self.channels)]
        return ["-map", "0:v", "-map", "1:a", *video, *audio]


def _ffmpeg(args: Sequence[str]) -> None:
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], capture_output=True, timeout=120
    )
    if proc.returncode:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")


def make_ts_segments(
    src: AvSource, workdir: Path, *, split: str = "segment", pes_payload_size: int | None = None, straddle: bool = False
) -> list[bytes]:
    """MPEG-TS segments of `src`, one per GOP, as the ffmpeg binary muxes them.

    `split="segment"`: ffmpeg's segment muxer (`-f segment -segment_format mpegts`), as a gateway
    cuts them; it restarts the MPEG-TS muxer for each segment, so every audio PES is whole.
    `split="bytes"`: one continuous MPEG-TS cut at its keyframes' PAT/PMT (`cut_at_keyframes`),
    as a relay that segments a running stream cuts it; with `straddle`, audio PES span the cuts.
    `pes_payload_size=0` makes ffmpeg write one audio frame per PES (the layout our own test
    source has); None keeps ffmpeg's default (several frames per PES).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    mux: dict[str, str] = {}  # MPEG-TS muxer options
    if src.codec == "latm":
        mux["mpegts_flags"] = "latm"
    if pes_payload_size is not None:
        mux["pes_payload_size"] = str(pes_payload_size)
    # Always offset: with B-frames the first DTS is negative, and the muxer shifts a stream
    # that starts at 0 by that much, but not one offset past it; parts that follow each
    # other (`start`) must be shifted alike.
    offset = ["-output_ts_offset", f"{src.start + 1.0}"]
    common = [*src.input_args(), *src.codec_args(), *offset]
    if split == "segment":
        options = ["-segment_format_options", ":".join(f"{k}={v}" for k, v in mux.items())] if mux else []
        segment = ["-f", "segment", "-segment_time", str(src.gop / src.fps), "-segment_format", "mpegts", *options]
        _ffmpeg([*common, *segment, str(workdir / "seg%03d.ts")])
        return [p.read_bytes() for p in sorted(workdir.glob("seg*.ts"))]
    if split == "bytes":
        flags = [a for k, v in mux.items() for a in (f"-{k}", v)]
        path = workdir / "whole.ts"
        _ffmpeg([*common, *flags, "-f", "mpegts", str(path)])
        return cut_at_keyframes(path.read_bytes(), straddle=straddle)
    raise ValueError(f"split must be 'segment' or 'bytes', not {split!r}")


def make_flv(src: AvSource, path: Path) -> Path:
    """An FLV file of `src` as OBS streams by default (x264 veryfast with 2 B-frames, AAC);
    push it with `ffmpeg -re -i path -c copy -f flv rtmp://...`."""
    args = [*src.input_args(), *src.codec_args(), "-bf", "2", "-f", "flv", str(path)]
    _ffmpeg(args)
    return path


# --- a tiny MPEG-TS parser ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Packet:
    index: int
    pid: int
    pusi: bool
    random_access: bool
    payload: bytes


def _packets(data: bytes) -> list[_Packet]:
    if len(data) % TS:
        raise ValueError(f"{len(data)} bytes is not a whole number of TS packets")
    out = []
    for i in range(0, len(data), TS):
        p = data[i : i + TS]
        if p[0] != 0x47:
            raise ValueError(f"no sync byte at {i}")
        pid = ((p[1] & 0x1F) << 8) | p[2]
        afc = (p[3] >> 4) & 3
        pos, random_access = 4, False
        if afc & 2:
            length = p[4]
            random_access = length > 0 and bool(p[5] & 0x40)
            pos = 5 + length
        payload = p[pos:] if afc & 1 else b""
        out.append(_Packet(i // TS, pid, bool(p[1] & 0x40), random_access, payload))
    return out


def _section(payload: bytes) -> bytes:
    return payload[1 + payload[0] :]  # skip the pointer field


def ts_streams(data: bytes) -> tuple[int, dict[int, int]]:
    """The PMT's PID and its streams: {elementary PID: stream type}."""
    packets = _packets(data)
    pmt_pid = None
    for p in packets:
        if p.pid == PAT_PID and p.pusi:
            sec = _section(p.payload)
            length = ((sec[1] & 0x0F) << 8) | sec[2]
            for j in range(8, 3 + length - 4, 4):
                if (sec[j] << 8) | sec[j + 1]:  # program 0 is the NIT
                    pmt_pid = ((sec[j + 2] & 0x1F) << 8) | sec[j + 3]
                    break
            break
    if pmt_pid is None:
        raise ValueError("no PAT")
    for p in packets:
        if p.pid == pmt_pid and p.pusi:
            sec = _section(p.payload)
            length = ((sec[1] & 0x0F) << 8) | sec[2]
            info = ((sec[10] & 0x0F) << 8) | sec[11]
            j, end, streams = 12 + info, 3 + length - 4, {}
            while j < end:
                streams[((sec[j + 1] & 0x1F) << 8) | sec[j + 2]] = sec[j]
                j += 5 + (((sec[j + 3] & 0x0F) << 8) | sec[j + 4])
            return pmt_pid, streams
    raise ValueError("no PMT")


def _pes(data: bytes, pid: int) -> tuple[bytes, list[tuple[int | None, bytes]]]:
    """(payload bytes before the first PES start, [(pts, PES payload)]) of one PID."""
    lead = bytearray()
    pes: list[tuple[int | None, bytearray]] = []
    for p in _packets(data):
        if p.pid != pid:
            continue
        if p.pusi:
            h = p.payload
            assert h[:3] == b"\x00\x00\x01", "PES start code"
            pts = None
            if h[7] & 0x80:
                pts = ((h[9] >> 1) & 7) << 30 | h[10] << 22 | (h[11] >> 1) << 15 | h[12] << 7 | h[13] >> 1
            pes.append((pts, bytearray(h[9 + h[8] :])))
        elif pes:
            pes[-1][1].extend(p.payload)
        else:
            lead.extend(p.payload)
    return bytes(lead), [(pts, bytes(body)) for pts, body in pes]


def _count_frames(codec: str, payload: bytes) -> int:
    if codec == "aac":  # ADTS: 12-bit sync, 13-bit frame length
        n = pos = 0
        while pos + 7 <= len(payload):
            assert payload[pos] == 0xFF and payload[pos + 1] & 0xF0 == 0xF0, f"ADTS sync at {pos}"
            pos += ((payload[pos + 3] & 3) << 11) | (payload[pos + 4] << 3) | (payload[pos + 5] >> 5)
            n += 1
        return n
    ctx = av.CodecContext.create({"mp3float": "mp3"}.get(codec, codec), "r")
    return len(ctx.parse(payload)) + len(ctx.parse(None))


@dataclass
class PesLayout:
    """How a stream's audio frames are packed into PES, per segment."""

    codec: str
    #: Frames in each PES that starts in a segment, over all segments (a PES that the
    #: segment's end cuts short counts the frames that begin before the cut).
    frames_per_pes: list[int] = field(default_factory=list)
    #: Per segment: its first audio TS packet continues a PES begun in the previous segment.
    starts_mid_pes: list[bool] = field(default_factory=list)

    @property
    def multi_frame_pes(self) -> int:
        return sum(1 for n in self.frames_per_pes if n > 1)


def audio_pes_layout(segments: Sequence[bytes], codec: str) -> PesLayout:
    """Parse each segment's audio PES. `codec` is the decoder name ("aac", "mp2", ...)."""
    layout = PesLayout(codec)
    for data in segments:
        _, streams = ts_streams(data)
        pid = next(p for p, t in streams.items() if t in AUDIO_STREAM_TYPES)
        lead, pes = _pes(data, pid)
        layout.starts_mid_pes.append(bool(lead))
        layout.frames_per_pes.extend(_count_frames(codec, body) for _, body in pes)
    return layout


def cut_at_keyframes(data: bytes, *, straddle: bool = False) -> list[bytes]:
    """Cut one continuous MPEG-TS before each video keyframe, as a byte-level segmenter does.

    The cut goes before the PAT/PMT/SDT packets just before the keyframe (FFmpeg's muxer writes
    them there), else a copy of the stream's first PAT and PMT is put in front, so each segment
    stands alone.

    FFmpeg writes each PES's TS packets back to back, so its audio PES never span such a cut.
    Muxers that interleave at the TS-packet level (hardware encoders, broadcast muxers) do:
    `straddle=True` moves the second half of the TS packets of the last audio PES before each
    cut to just after the keyframe's first packet, so the next segment opens in the middle of
    that PES. Per-PID packet order (and so the continuity counters) is unchanged.
    """
    pmt_pid, streams = ts_streams(data)
    video_pid = next(p for p, t in streams.items() if t in (0x1B, 0x24))
    audio_pid = next(p for p, t in streams.items() if t in AUDIO_STREAM_TYPES)
    packets = _packets(data)
    tables = {PAT_PID, SDT_PID, pmt_pid}
    header = b"".join(
        data[p.index * TS : (p.index + 1) * TS]
        for p in (next(q for q in packets if q.pid == pid and q.pusi) for pid in (PAT_PID, pmt_pid))
    )
    cuts: list[int] = []
    moved: dict[int, list[int]] = {}  # keyframe packet index -> audio packets to put after it
    for p in packets:
        if p.pid == video_pid and p.pusi and p.random_access and p.index > 0:
            start = p.index
            while start > 0 and packets[start - 1].pid in tables:
                start -= 1
            if start == 0:
                continue
            if straddle:
                since = cuts[-1] if cuts else 0
                last = max(q.index for q in packets[since:start] if q.pid == audio_pid and q.pusi)
                tail = [q.index for q in packets[last:start] if q.pid == audio_pid]
                if len(tail) >= 2:
                    moved[p.index] = tail[len(tail) // 2 :]
            cuts.append(start)
    skip = {i for ids in moved.values() for i in ids}
    order: list[int] = []
    for p in packets:
        if p.index not in skip:
            order.append(p.index)
        order.extend(moved.get(p.index, ()))
    position = {index: n for n, index in enumerate(order)}
    bounds = [0, *(position[c] for c in cuts), len(order)]
    segments = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        chunk = b"".join(data[i * TS : (i + 1) * TS] for i in order[a:b])
        if packets[order[a]].pid != PAT_PID and packets[order[a]].pid != SDT_PID:
            chunk = header + chunk
        segments.append(chunk)
    return segments


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Measured:
    """What a viewer of the stream would see and hear, decoded with FFmpeg's full probing."""

    video_frames: int = 0
    #: Decoded audio, seconds (decoded samples over the sample rate).
    audio_seconds: float = 0.0
    audio_codec: str | None = None
    sample_rates: set[int] = field(default_factory=set)
    #: Per segment: decoded audio seconds and video frames.
    segment_audio: list[float] = field(default_factory=list)
    segment_video: list[int] = field(default_factory=list)
    #: Stream times (seconds) of the first video frame, the first white frame and the first
    #: sample of the beep.
    first_video: float | None = None
    flash: float | None = None
    beep: float | None = None

    @property
    def sync(self) -> float | None:
        """Beep minus flash (seconds): 0 when sound and picture are in step."""
        return None if self.beep is None or self.flash is None else self.beep - self.flash

    def describe(self) -> str:
        sync = "none" if self.sync is None else f"{self.sync * 1000:+.1f} ms"
        per_segment = [round(s, 2) for s in self.segment_audio]
        return (
            f"video {self.video_frames} frames, audio {self.audio_seconds:.3f} s ({self.audio_codec}, "
            f"{sorted(self.sample_rates)} Hz), per segment {per_segment} s, beep-flash {sync}"
        )


#: Beep detection: the beep's amplitude is 0.6 over a 0.1 tone; an envelope above 0.35 is the
#: beep, not coding noise or the tone.
BEEP_LEVEL = 0.35
FLASH_LUMA = 200


def _beep_in(frame: av.AudioFrame) -> int | None:
    """Index of the first sample of the beep in a decoded frame, or None."""
    samples = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
    if samples.dtype.kind == "i":
        samples = samples / float(np.iinfo(samples.dtype).max)
    level = np.abs(samples.astype(np.float32))
    level = level.max(axis=0) if frame.format.is_planar else level.reshape(frame.samples, -1).max(axis=1)
    hits = np.nonzero(level > BEEP_LEVEL)[0]
    return int(hits[0]) if len(hits) else None


def _measure_container(container: av.container.InputContainer, into: Measured) -> tuple[float, int]:
    audio_s, frames = 0.0, 0
    streams = [s for s in container.streams if s.type in ("video", "audio")]
    for packet in container.demux(*streams):
        try:
            decoded = packet.decode()
        except av.InvalidDataError:
            continue
        for frame in decoded:
            t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
            if isinstance(frame, av.VideoFrame):
                frames += 1
                if t is not None:
                    into.first_video = t if into.first_video is None else min(into.first_video, t)
                    if into.flash is None and frame.to_ndarray(format="gray").mean() > FLASH_LUMA:
                        into.flash = t
            else:
                into.audio_codec = into.audio_codec or packet.stream.codec_context.name
                into.sample_rates.add(frame.sample_rate)
                audio_s += frame.samples / frame.sample_rate
                if t is not None and into.beep is None:
                    at = _beep_in(frame)
                    if at is not None:
                        into.beep = t + at / frame.sample_rate
    return audio_s, frames


def measure(segments: Sequence[bytes] | Path, fmt: str = "mpegts") -> Measured:
    """Decode MPEG-TS segments (each one on its own, as it stands alone) or a file."""
    m = Measured()
    if isinstance(segments, Path):
        with av.open(str(segments)) as container:
            audio_s, frames = _measure_container(container, m)
        m.segment_audio.append(audio_s)
        m.segment_video.append(frames)
    else:
        for data in segments:
            if not data:
                continue
            with av.open(io.BytesIO(data), "r", format=fmt) as container:
                audio_s, frames = _measure_container(container, m)
            m.segment_audio.append(audio_s)
            m.segment_video.append(frames)
    m.audio_seconds = sum(m.segment_audio)
    m.video_frames = sum(m.segment_video)
    return m


#: Audio a correct engine may add or lose against what a per-segment decoder gets from the input
#: (4 s of it): up to 2 codec frames when it re-encodes (the AAC encoder's priming frame and
#: its flush), plus up to one video frame's worth at either end (audio before the first or
#: after the last video frame), or where two sources overlap. 0.1 s covers these with room; a
#: demuxer that drops the untimed frames of each PES loses far more (7 of 8 frames at 48 kHz).
DURATION_TOLERANCE = 0.1


def viewer_problems(inp: Measured, out: Measured, *, source_seconds: float) -> list[str]:
    """What a viewer would notice, comparing the output with the input; [] when nothing.

    - every video frame is there;
    - the audio lasts as long as what a per-segment decoder gets from the input, within
      `DURATION_TOLERANCE` (and no longer than the source);
    - every output segment after the first carries audio;
    - beep minus flash is the input's within one audio frame of the output codec: the decoded
      onset may move within a frame (codec delay, pre-echo), and a whole frame of drift is
      what a dropped or inserted frame costs.
    """
    found = []
    if out.video_frames != inp.video_frames:
        found.append(f"video frames: {out.video_frames} out of {inp.video_frames}")
    low, high = inp.audio_seconds - DURATION_TOLERANCE, source_seconds + DURATION_TOLERANCE
    if not low <= out.audio_seconds <= high:
        found.append(
            f"audio duration: {out.audio_seconds:.3f} s out, {inp.audio_seconds:.3f} s in "
            f"({100 * out.audio_seconds / max(inp.audio_seconds, 1e-9):.0f}%; allowed {low:.3f}..{high:.3f} s)"
        )
    silent = [i for i, s in enumerate(out.segment_audio) if i > 0 and s == 0]
    if silent:
        found.append(f"output segments without audio: {silent} of {len(out.segment_audio)}")
    if out.sync is None:
        found.append(f"no beep or flash in the output (beep at {out.beep}, flash at {out.flash})")
    elif inp.sync is not None:
        rate = max(out.sample_rates or {48000})
        frame = frame_samples(out.audio_codec or "aac") / rate
        drift = out.sync - inp.sync
        if abs(drift) > frame:
            found.append(
                f"A/V sync: beep-flash {out.sync * 1000:+.1f} ms out vs {inp.sync * 1000:+.1f} ms in "
                f"(drift {drift * 1000:+.1f} ms, allowed one audio frame, {frame * 1000:.1f} ms)"
            )
    return found
