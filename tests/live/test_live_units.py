"""Unit tests of the live building blocks: frame queue, TS segmenter, control parsing, effect."""

from __future__ import annotations

import asyncio
import io
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from livestream.live.control import ControlError, merge_params, parse_control
from livestream.live.frames import FrameQueue, InputFrame, StreamEnded
from livestream.live.media import (
    EncoderConfig,
    SegmentedEncoder,
    TsSegmenter,
    fit_size,
    resize_rgb,
)
from livestream.live.testsrc import decode_ts, draw_frame, read_number
from pipelines.live import default_live_registry
from pipelines.live.color_filter import ColorFilterParams, ColorFilterPipeline
from pipelines.errors import InvalidRequestError


def _item(pts: int, fps: int = 30) -> InputFrame:
    return InputFrame(av.VideoFrame(64, 64, "yuv420p"), pts, Fraction(1, fps), 0.0)


async def test_frame_queue_drops_oldest_beyond_lag_and_size() -> None:
    q = FrameQueue(asyncio.get_running_loop(), max_frames=10, max_lag=0.5)
    for i in range(30):  # one second of frames at 30 fps, nobody consuming
        q.put(_item(i))
    assert len(q) == 10 and q.dropped == 20
    batch = await q.get_batch(4)
    assert [f.pts for f in batch] == [20, 21, 22, 23]
    q.close()
    rest = await q.get_batch(100)
    assert [f.pts for f in rest] == list(range(24, 30))
    with pytest.raises(StreamEnded):
        await q.get_batch()


async def test_frame_queue_keeps_a_burst_within_lag() -> None:
    q = FrameQueue(asyncio.get_running_loop(), max_frames=64, max_lag=1.0)
    for i in range(30):
        q.put(_item(i))
    assert len(q) == 30 and q.dropped == 0


async def test_frame_queue_wakes_consumer_from_another_thread() -> None:
    q = FrameQueue(asyncio.get_running_loop())
    waiter = asyncio.create_task(q.get_batch())
    await asyncio.sleep(0.01)
    await asyncio.to_thread(q.put, _item(7))
    assert [f.pts for f in await asyncio.wait_for(waiter, 2)] == [7]


def _ts_packet(pid: int) -> bytes:
    return bytes([0x47, (pid >> 8) & 0x1F, pid & 0xFF]) + bytes(185)


def test_ts_segmenter_cuts_before_pat_after_video() -> None:
    seg = TsSegmenter()
    pat, pmt, video, audio = _ts_packet(0), _ts_packet(0x1000), _ts_packet(0x100), _ts_packet(0x101)
    stream = pat + pmt + audio + pat + pmt + video + video + audio + pat + pmt + video
    out: list[bytes | None] = []
    for i in range(0, len(stream), 100):  # unaligned writes
        out += seg.feed(stream[i : i + 100])
    parts = b"".join(x if x is not None else b"|" for x in out).split(b"|")
    assert [len(p) // 188 for p in parts] == [8, 3]
    assert parts[1].startswith(pat)


def test_encoder_segments_start_with_keyframes_and_follow_pts() -> None:
    chunks: list[bytes] = []
    cuts: list[int] = []
    enc = SegmentedEncoder(
        EncoderConfig(gop_seconds=0.5), on_data=chunks.append, on_cut=lambda: cuts.append(len(chunks))
    )
    for i in range(45):
        frame = av.VideoFrame.from_ndarray(draw_frame(i, 64, 64), format="rgb24")
        assert enc.encode(frame, 3000 * i + 90000)
    assert not enc.encode(av.VideoFrame.from_ndarray(draw_frame(99, 64, 64), format="rgb24"), 3000 * 43 + 90000)  # late
    enc.close()
    bounds = [0, *cuts]
    segments = [b"".join(chunks[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    assert len(segments) == 3  # 1.5 s at a 0.5 s GOP
    numbers: list[int] = []
    for data in segments:
        with av.open(io.BytesIO(data), format="mpegts") as c:
            packets = [p for p in c.demux(c.streams.video[0]) if p.size]
            assert packets[0].is_keyframe
        frames, pts, _ = decode_ts(data)
        numbers += [read_number(f) for f in frames]
        assert pts[0] % 3000 == 0
    assert numbers == list(range(45))


def test_encoder_restarts_on_resolution_change() -> None:
    chunks: list[bytes] = []
    enc = SegmentedEncoder(EncoderConfig(), on_data=chunks.append, on_cut=lambda: None)
    for i, size in enumerate([64] * 5 + [96] * 5):
        enc.encode(av.VideoFrame.from_ndarray(draw_frame(i, size, size), format="rgb24"), 3000 * i)
    enc.close()
    frames, _, _ = decode_ts(b"".join(chunks))
    assert [f.shape[0] for f in frames] == [64] * 5 + [96] * 5
    assert enc.restarts == 1


def test_fit_size_and_resize() -> None:
    assert fit_size(128, 128) == (128, 128)
    assert fit_size(1920, 1080) == (1024, 576)
    assert fit_size(30, 30) == (64, 64)
    frame = av.VideoFrame.from_ndarray(draw_frame(5, 256, 128), format="rgb24")
    out = resize_rgb(frame, 64, 64)
    assert out.shape == (64, 64, 3)


def test_control_messages() -> None:
    assert parse_control(b'{"keep":"alive"}', ColorFilterParams) is None
    assert parse_control(b"", ColorFilterParams) is None
    # A full param set: omitted fields take their defaults (not a patch).
    params = parse_control(b'{"hue_shift": 30}', ColorFilterParams)
    assert params == ColorFilterParams(hue_shift=30)
    for bad in (b"[1]", b'{"nope": 1}', b'{"saturation": 9}', b"{", b'{"width": 100}'):
        with pytest.raises(ControlError):
            parse_control(bad, ColorFilterParams)
    merged = merge_params(ColorFilterParams(invert=True), {"saturation": 0.5})
    assert merged.invert and merged.saturation == 0.5


def test_color_filter_effects() -> None:
    pipe = ColorFilterPipeline()
    pipe.load(ColorFilterParams())
    x = torch.tensor([[[[220, 20, 20], [0, 0, 0], [255, 255, 255]]]], dtype=torch.uint8)
    assert torch.equal(pipe.process(x), x)  # defaults: identity
    pipe.update_params(ColorFilterParams(saturation=0))
    gray = pipe.process(x)[0, 0, 0].tolist()
    assert max(gray) - min(gray) <= 1
    pipe.update_params(ColorFilterParams(invert=True))
    assert pipe.process(x)[0, 0, 1:].tolist() == [[255, 255, 255], [0, 0, 0]]
    pipe.update_params(ColorFilterParams(invert=True, strength=0))
    assert torch.equal(pipe.process(x), x)


def test_registry_lists_params_without_torch_models() -> None:
    registry = default_live_registry()
    assert {s.name for s in registry} >= {"noop", "color-filter"}
    with pytest.raises(InvalidRequestError):
        registry.get("streamdiffusion-nope")


def test_drawn_numbers_roundtrip() -> None:
    for n in (0, 1, 255, 4097, 65535):
        assert read_number(draw_frame(n, 128, 128)) == n
    assert np.asarray(draw_frame(3, 64, 64)).shape == (64, 64, 3)


def test_encoder_transcodes_audio_it_cannot_copy() -> None:
    from livestream.live.media import AudioSource

    chunks: list[bytes] = []
    enc = SegmentedEncoder(EncoderConfig(), on_data=chunks.append, on_cut=lambda: None)
    enc.set_audio_source(AudioSource(codec="pcm_s16le", sample_rate=44100, channels=1, copy=False))
    t = 0
    for i in range(30):
        samples = (np.sin(np.arange(t, t + 1470) / 44100 * 2 * np.pi * 440) * 8000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 44100
        enc.push_audio(frame)
        t += 1470
        enc.encode(av.VideoFrame.from_ndarray(draw_frame(i, 64, 64), format="rgb24"), 3000 * i)
    enc.close()
    with av.open(io.BytesIO(b"".join(chunks)), format="mpegts") as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        audio_packets = [p for p in c.demux(c.streams.audio[0]) if p.size]
    assert len(audio_packets) > 10
