"""Real audio files for the audio tests, encoded with PyAV: tones, silence, stereo, a video's audio track."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import numpy as np


def tone(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """`(channels, n)` float32: a sine per channel (a fifth apart), or silence with `amplitude=0`."""
    t = np.arange(int(seconds * rate)) / rate
    rows = [amplitude * np.sin(2 * np.pi * freq * (1.5**c) * t) for c in range(channels)]
    return np.asarray(rows, dtype=np.float32)


def encode_audio(samples: np.ndarray, rate: int, fmt: str = "wav", codec: str = "pcm_s16le") -> bytes:
    """Mux `(channels, n)` float samples into a `fmt` container with `codec` (fed in 1024-sample frames)."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], frame_size):
            chunk = np.ascontiguousarray(samples[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def wav(seconds: float, rate: int = 16000, channels: int = 1, amplitude: float = 0.3) -> bytes:
    return encode_audio(tone(seconds, rate, channels, amplitude=amplitude), rate)


def mp3(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    return encode_audio(tone(seconds, rate, channels), rate, "mp3", "libmp3lame")


def video_with_audio(seconds: float, rate: int = 48000, with_audio: bool = True) -> bytes:
    """An MP4 with an H.264 (or MPEG-4 part 2) 64x64 video track and, optionally, an AAC stereo track."""
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
            pixels = np.full((64, 64, 3), (i * 20) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            samples = tone(seconds, rate, 2)
            size = audio.codec_context.frame_size or 1024
            for start in range(0, samples.shape[1], size):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, start : start + size]), format="fltp", layout="stereo"
                )
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return buf.getvalue()


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    """The first `fraction` of a file, as an interrupted upload leaves it."""
    return data[: max(1, math.floor(len(data) * fraction))]
