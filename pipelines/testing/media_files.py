"""Real audio and video files for the audio tests and benchmarks, encoded with PyAV: tones in
any container/codec FFmpeg has, and a small video with (or without) an audio track."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

__all__ = ["encode_audio", "tone", "video_with_audio"]


def tone(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """`(channels, n)` float32: a sine per channel (a fifth apart), or silence with `amplitude=0`."""
    t = np.arange(int(seconds * rate)) / rate
    rows = [amplitude * np.sin(2 * np.pi * freq * (1.5**c) * t) for c in range(channels)]
    return np.asarray(rows, dtype=np.float32)


def encode_audio(samples: np.ndarray, rate: int, fmt: str = "wav", codec: str = "pcm_s16le") -> bytes:
    """Mux `(channels, n)` float samples (1 or 2 channels) into a `fmt` container with `codec`,
    fed in the codec's frame size (1024 samples where it has none)."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if not isinstance(stream, av.AudioStream):
            raise ValueError(f"{codec!r} is not an audio codec")
        _encode_samples(container, stream, samples, rate, layout)
    return buf.getvalue()


def video_with_audio(seconds: float, rate: int = 48000, with_audio: bool = True) -> bytes:
    """An MP4 with an H.264 (or MPEG-4 part 2) 64x64 10 fps video track and, optionally, an AAC
    stereo track (`tone`)."""
    buf = io.BytesIO()
    fps = 10
    with av.open(buf, "w", format="mp4") as container:
        try:
            video = container.add_stream("libx264", rate=fps)
        except (av.FFmpegError, ValueError):
            video = container.add_stream("mpeg4", rate=fps)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo") if with_audio else None
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), (i * 20) % 255, dtype=np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            _encode_samples(container, audio, tone(seconds, rate, 2), rate, "stereo")
    return buf.getvalue()


def _encode_samples(container: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray, rate: int, layout: str) -> None:
    size = stream.codec_context.frame_size or 1024
    for start in range(0, samples.shape[1], size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + size]), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
