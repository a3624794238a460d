"""The live path's media units: H.264 encoder, AAC encoder, audio frame headers, MPEG-TS muxer."""

from __future__ import annotations

import io
from collections.abc import Iterable

import av
import numpy as np

from livestream.live.testsrc import decode_ts, draw_frame, read_number
from livestream.media.audio_encoder import AudioEncoder
from livestream.media.audio_frames import adts_header, adts_to_raw, frame_samples
from livestream.media.packets import EncodedPacket
from livestream.media.ts_input import AudioClock
from livestream.media.ts_mux import SEGMENT_START, TsMuxer, crc32_mpeg2
from livestream.media.video_encoder import EncoderConfig, H264Encoder


def _segments(packets: Iterable[EncodedPacket]) -> list[bytes]:
    muxer, segments = TsMuxer(), []
    for packet in packets:
        for chunk in muxer.mux(packet):
            if chunk is SEGMENT_START:
                segments.append(b"")
            else:
                segments[-1] += chunk
    return segments


def _frame(i: int, size: int = 64) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(draw_frame(i, size, size), format="rgb24")


def test_crc32_mpeg2_check_value() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # the CRC-32/MPEG-2 catalogue check value


def test_segments_start_with_keyframes_and_follow_pts() -> None:
    enc = H264Encoder(EncoderConfig(gop_seconds=0.5))
    packets: list[EncodedPacket] = []
    for i in range(45):
        out = enc.encode(_frame(i), 3000 * i + 90000)
        assert out is not None
        packets += out
    assert enc.encode(_frame(99), 3000 * 43 + 90000) is None  # late: dropped
    packets += enc.flush()
    segments = _segments(packets)
    assert len(segments) == 3  # 1.5 s at a 0.5 s GOP
    numbers: list[int] = []
    for data in segments:
        assert len(data) % 188 == 0
        with av.open(io.BytesIO(data), format="mpegts") as c:
            first = next(p for p in c.demux(c.streams.video[0]) if p.size)
            assert first.is_keyframe
        frames, pts, _ = decode_ts(data)
        numbers += [read_number(f) for f in frames]
        assert pts[0] % 3000 == 0
    assert numbers == list(range(45))


def test_encoder_restarts_on_resolution_change() -> None:
    enc = H264Encoder(EncoderConfig())
    packets: list[EncodedPacket] = []
    for i, size in enumerate([64] * 5 + [96] * 5):
        packets += enc.encode(_frame(i, size), 3000 * i) or []
    packets += enc.flush()
    frames, _, _ = decode_ts(b"".join(_segments(packets)))
    assert [f.shape[0] for f in frames] == [64] * 5 + [96] * 5
    assert enc.restarts == 1


def test_aac_encoder_times_packets_from_input() -> None:
    from fractions import Fraction

    audio = AudioEncoder()
    packets: list[EncodedPacket] = []
    for i in range(40):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
        frame.sample_rate = 44100
        frame.pts, frame.time_base = 900000 + round(i * 1024 * 90000 / 44100), Fraction(1, 90000)
        packets += audio.encode(frame)
    packets += audio.flush()
    assert all(p.codec == "aac" and p.extradata for p in packets)
    # 40 * 1024 samples at 44.1 kHz: about 0.93 s, starting at 10 s (one frame of priming early).
    assert abs(packets[0].pts - 900000) <= 1920
    assert abs(packets[-1].pts + packets[-1].duration - packets[0].pts - 40 * 1024 * 90000 / 44100) < 2 * 1920


def test_aac_encoder_never_times_a_packet_before_zero() -> None:
    """A stream starting at 0 (WebRTC audio): the priming packet would be at -1920, which
    MPEG-TS wraps to 26 hours ahead; it is dropped."""
    from fractions import Fraction

    audio = AudioEncoder()
    packets: list[EncodedPacket] = []
    for i in range(10):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, Fraction(1, 48000)
        packets += audio.encode(frame)
    packets += audio.flush()
    assert packets and packets[0].pts == 0 and all(p.pts >= 0 for p in packets)


def test_audio_frame_headers() -> None:
    raw = b"\x21\x00" * 10
    asc = bytes.fromhex("1190")  # AAC LC, 48 kHz, stereo
    frame = adts_header(asc, len(raw)) + raw
    assert frame_samples("aac", frame) == (1024, 48000)
    assert adts_to_raw(frame) == (raw, asc)
    assert frame_samples("mp2", bytes.fromhex("fffd8444")) == (1152, 48000)  # MPEG-1 Layer II
    assert frame_samples("mp3", bytes.fromhex("fff3a0c4")) == (576, 22050)  # MPEG-2 Layer III
    assert frame_samples("ac3", bytes.fromhex("0b770000500000")) == (1536, 44100)
    assert frame_samples("aac", b"not a frame") is None


def test_audio_clock_times_frames_without_timestamps() -> None:
    clock = AudioClock()
    assert clock.stamp(None, 1024, 48000) is None  # nothing to start from
    assert clock.stamp(90000, 1024, 48000) == 90000
    assert clock.stamp(None, 1024, 48000) == 90000 + 1920
    assert clock.stamp(None, 1024, 48000) == 90000 + 3840
    assert clock.stamp(200000, 1024, 48000) == 200000  # a timestamp wins
