"""A synthetic live source for tests, benchmarks and demos.

Frames carry their frame number as a row of black/white blocks (16 bits, most significant
first) so output can be matched to input after lossy encoding; the lower quarter holds a
saturated red patch that colour effects visibly change. Audio is a 440 Hz AAC tone.
"""

from __future__ import annotations

import io
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["BITS", "decode_ts", "draw_frame", "make_ts_segments", "read_number", "red_patch"]

#: Bits of the drawn frame number: two rows of eight blocks.
BITS = 16


def _block(width: int) -> int:
    return width // 8


def draw_frame(number: int, width: int, height: int) -> np.ndarray:
    """An RGB frame (height, width, 3) uint8 showing `number` and a red reference patch."""
    img = np.full((height, width, 3), 96, dtype=np.uint8)
    # A moving gradient so the encoder has real work to do.
    img[:, :, 1] = ((np.arange(width, dtype=np.int64)[None, :] + number * 4) % 256).astype(np.uint8) // 2
    b = _block(width)
    for bit in range(BITS):
        on = (number >> (BITS - 1 - bit)) & 1
        row, col = divmod(bit, 8)
        img[row * b : (row + 1) * b, col * b : (col + 1) * b] = 255 if on else 0
    img[height * 3 // 4 :, :] = (220, 20, 20)
    return img


def read_number(rgb: np.ndarray) -> int:
    """Read the number `draw_frame` drew (tolerates coding noise)."""
    width = rgb.shape[1]
    b = _block(width)
    q = max(1, b // 4)
    gray = rgb.astype(np.float32).mean(axis=2)
    number = 0
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        cell = gray[row * b + q : (row + 1) * b - q, col * b + q : (col + 1) * b - q]
        number = (number << 1) | int(cell.mean() > 128)
    return number


def red_patch(rgb: np.ndarray) -> tuple[float, float, float]:
    """Mean colour of the reference patch (centre of the lower quarter)."""
    h, w = rgb.shape[:2]
    patch = rgb[h * 3 // 4 + h // 16 : h - h // 16, w // 4 : w * 3 // 4].astype(np.float32)
    r, g, bl = patch.reshape(-1, 3).mean(axis=0)
    return float(r), float(g), float(bl)


def make_ts_segments(
    *,
    frames: int,
    width: int = 128,
    height: int = 128,
    fps: int = 30,
    segment_seconds: float = 1.0,
    audio: bool = True,
    start_number: int = 0,
    bitrate: int = 400_000,
) -> list[bytes]:
    """Encode `frames` frames (H.264, plus AAC when `audio`) into standalone MPEG-TS segments.

    Each segment starts with a keyframe, as a gateway's `ffmpeg -f segment` produces them;
    timestamps run on across segments.
    """
    with tempfile.TemporaryDirectory(prefix="testsrc-") as tmp:
        pattern = str(Path(tmp) / "seg%05d.ts")
        out = av.open(
            pattern,
            "w",
            format="segment",
            options={"segment_format": "mpegts", "segment_time": str(segment_seconds), "reset_timestamps": "0"},
        )
        gop = max(1, round(fps * segment_seconds))
        video = out.add_stream(
            "libx264",
            rate=fps,
            options={"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "g": str(gop), "keyint_min": str(gop)},
        )
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = bitrate
        video.time_base = Fraction(1, fps)
        astream = None
        if audio:
            astream = out.add_stream("aac", rate=48000)
            astream.layout = "mono"
            astream.bit_rate = 64_000
        samples_per_frame = 48000 // fps
        t = start_number * (48000 // fps)
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(draw_frame(start_number + i, width, height), format="rgb24")
            vf.pts = start_number + i
            vf.time_base = Fraction(1, fps)
            if i % gop == 0:
                vf.pict_type = av.video.frame.PictureType.I
            out.mux(video.encode(vf))
            if astream is not None:
                x = np.arange(t, t + samples_per_frame, dtype=np.float32) / 48000.0
                samples = (0.2 * np.sin(2 * np.pi * 440.0 * x)).astype(np.float32)[None, :]
                af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                af.sample_rate = 48000
                af.pts = t
                af.time_base = Fraction(1, 48000)
                t += samples_per_frame
                out.mux(astream.encode(af))
        out.mux(video.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
        out.close()
        return [p.read_bytes() for p in sorted(Path(tmp).glob("seg*.ts"))]


def decode_ts(data: bytes) -> tuple[list[np.ndarray], list[int], int]:
    """Decode an MPEG-TS byte string: (rgb frames, video pts, audio frame count)."""
    frames: list[np.ndarray] = []
    pts: list[int] = []
    audio_frames = 0
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for packet in container.demux(*streams):
            try:
                decoded = packet.decode()
            except av.InvalidDataError:
                continue
            for frame in decoded:
                if isinstance(frame, av.VideoFrame):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    pts.append(int(frame.pts or 0))
                else:
                    audio_frames += 1
    return frames, pts, audio_frames
