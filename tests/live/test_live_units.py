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
from livestream.media.sizes import fit_size, resize_rgb
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
    pipe.load(ColorFilterParams(hue_shift=0, saturation=1))
    x = torch.tensor([[[[220, 20, 20], [0, 0, 0], [255, 255, 255]]]], dtype=torch.uint8)
    assert torch.equal(pipe.process(x), x)  # no hue shift, saturation 1: identity
    pipe.update_params(ColorFilterParams())  # the defaults are a visible look: red turns cyan-ish
    red = pipe.process(x)[0, 0, 0].tolist()
    assert red[0] < red[1] and red[0] < red[2], red
    assert pipe.process(x)[0, 0, 1:].tolist() == [[0, 0, 0], [255, 255, 255]]  # grays stay
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
