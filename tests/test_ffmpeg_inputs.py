"""The ffmpeg-made test inputs (`tests/ffmpeg_inputs.py`) are what the live tests say they are:
checked with the module's own small MPEG-TS parser and with FFmpeg's demuxer."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from ffmpeg_inputs import AvSource, audio_pes_layout, make_flv, make_ts_segments, measure, ts_streams


@pytest.mark.parametrize(
    ("codec", "rate", "channels", "stream_type"),
    [
        ("aac", 48000, 2, 0x0F),
        ("aac", 44100, 1, 0x0F),
        ("latm", 48000, 2, 0x11),
        ("mp3", 44100, 2, 0x03),
        ("mp2", 48000, 2, 0x03),
        ("opus", 48000, 2, 0x06),
    ],
)
def test_default_ffmpeg_muxing_packs_several_audio_frames_per_pes(
    codec: str, rate: int, channels: int, stream_type: int, tmp_path: Path
) -> None:
    src = AvSource(codec=codec, rate=rate, channels=channels)
    segments = make_ts_segments(src, tmp_path)
    assert len(segments) == 4
    _, streams = ts_streams(segments[0])
    assert sorted(streams.values()) == sorted([0x1B, stream_type])
    layout = audio_pes_layout(segments, src.expected_codec)
    # Nearly every PES holds several frames (a segment's last one may hold one).
    assert layout.multi_frame_pes >= len(layout.frames_per_pes) - 4, layout
    assert sum(layout.frames_per_pes) * 1024 / rate > 3.5
    # ffmpeg's segment muxer restarts its MPEG-TS muxer per segment: no PES spans segments.
    assert layout.starts_mid_pes == [False] * 4
    m = measure(segments)
    assert m.video_frames == 120 and m.audio_codec == src.expected_codec and m.sample_rates == {rate}
    assert 3.95 < m.audio_seconds < 4.1
    assert m.flash is not None and m.first_video is not None and abs(m.flash - m.first_video - 2.5) < 1e-3
    assert m.sync is not None and abs(m.sync) < 0.002


def test_opened_as_the_engine_opens_it_only_the_first_frame_of_each_pes_is_timed(tmp_path: Path) -> None:
    """The defect the live tests look for: with `probesize=32, analyzeduration=0` FFmpeg does
    not know the sample rate when it splits a PES into frames, so only the first gets a DTS."""
    src = AvSource(codec="aac", rate=48000, channels=2)
    segment = make_ts_segments(src, tmp_path)[1]
    layout = audio_pes_layout([segment], "aac")
    timed = untimed = 0
    with av.open(io.BytesIO(segment), format="mpegts", options={"probesize": "32", "analyzeduration": "0"}) as c:
        for packet in c.demux(c.streams.audio[0]):
            if packet.size:
                timed += packet.dts is not None
                untimed += packet.dts is None
    assert timed == len(layout.frames_per_pes)
    assert untimed == sum(layout.frames_per_pes) - timed > 5 * timed


def test_one_frame_per_pes_on_request(tmp_path: Path) -> None:
    src = AvSource(codec="aac", rate=48000, channels=2)
    layout = audio_pes_layout(make_ts_segments(src, tmp_path, pes_payload_size=0), "aac")
    assert set(layout.frames_per_pes) == {1} and len(layout.frames_per_pes) > 180


def test_byte_cuts_at_keyframes(tmp_path: Path) -> None:
    """One continuous MPEG-TS cut at its keyframes: ffmpeg writes each PES's TS packets back
    to back, so plain cuts never split an audio PES; `straddle` makes each segment after the
    first open mid-PES, and what a per-segment demuxer then loses is less than one PES a cut."""
    src = AvSource(codec="aac", rate=48000, channels=2)
    plain = make_ts_segments(src, tmp_path / "plain", split="bytes")
    straddled = make_ts_segments(src, tmp_path / "straddle", split="bytes", straddle=True)
    assert len(plain) == len(straddled) == 4
    assert audio_pes_layout(plain, "aac").starts_mid_pes == [False] * 4
    layout = audio_pes_layout(straddled, "aac")
    assert layout.starts_mid_pes == [False, True, True, True]
    assert b"".join(plain) != b"".join(straddled) and sorted(b"".join(plain)) == sorted(b"".join(straddled))
    whole, cut = measure(plain), measure(straddled)
    for s in straddled:
        with av.open(io.BytesIO(s), format="mpegts") as c:
            assert next(p for p in c.demux(c.streams.video[0]) if p.size).is_keyframe
    assert whole.video_frames == cut.video_frames == 120
    largest_pes = max(layout.frames_per_pes) * 1024 / 48000
    assert 0 < whole.audio_seconds - cut.audio_seconds < 3 * largest_pes


def test_parts_that_follow_each_other(tmp_path: Path) -> None:
    first = AvSource(codec="aac", rate=44100, channels=1, seconds=2.0)
    second = AvSource(codec="aac", rate=48000, channels=2, seconds=2.0, start=2.0)
    a, b = measure(make_ts_segments(first, tmp_path / "a")), measure(make_ts_segments(second, tmp_path / "b"))
    assert a.first_video is not None and b.first_video is not None
    assert b.first_video - a.first_video == pytest.approx(2.0, abs=1e-6)


def test_obs_like_flv(tmp_path: Path) -> None:
    src = AvSource(codec="aac", rate=48000, channels=2, gop=60, audio_bitrate="160k")
    m = measure(make_flv(src, tmp_path / "obs.flv"))
    assert m.video_frames == 120 and m.sample_rates == {48000} and 3.95 < m.audio_seconds < 4.1
    assert m.sync is not None and abs(m.sync) < 0.002
