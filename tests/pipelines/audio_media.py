"""Real audio files for the audio tests (the encoders are `pipelines.testing.media_files`): tones, silence, stereo, a video's audio track."""

from __future__ import annotations

import math

from pipelines.testing.media_files import encode_audio, tone, video_with_audio

__all__ = ["encode_audio", "mp3", "tone", "truncated", "video_with_audio", "wav"]


def wav(seconds: float, rate: int = 16000, channels: int = 1, amplitude: float = 0.3) -> bytes:
    return encode_audio(tone(seconds, rate, channels, amplitude=amplitude), rate)


def mp3(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    return encode_audio(tone(seconds, rate, channels), rate, "mp3", "libmp3lame")


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    """The first `fraction` of a file, as an interrupted upload leaves it."""
    return data[: max(1, math.floor(len(data) * fraction))]
