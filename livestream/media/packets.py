"""What flows between the live path's stages: encoded packets and the input audio's description."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["AUDIO_COPY_CODECS", "OUTPUT_TIME_BASE", "AudioSource", "EncodedPacket"]

#: Output timestamps are on MPEG-TS's 90 kHz clock, rescaled from the input's.
OUTPUT_TIME_BASE = Fraction(1, 90000)
#: Audio codecs copied to the output as they are (each frame carries its own header).
AUDIO_COPY_CODECS = frozenset({"aac", "mp2", "mp3", "ac3", "eac3"})


@dataclass(frozen=True, slots=True)
class AudioSource:
    """The input audio of the current segment: its codec, and whether it is copied."""

    codec: str
    sample_rate: int
    channels: int
    copy: bool


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded packet of a session's output (immutable: shared by every sink)."""

    #: "video" or "audio".
    kind: str
    #: "h264" for video; "aac" (or the copied input codec) for audio.
    codec: str
    data: bytes
    pts: int
    dts: int
    time_base: Fraction
    keyframe: bool = False
    #: Video: the coded size. Audio: sample rate and channel count.
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0
    #: Audio: the AudioSpecificConfig for raw AAC; None for ADTS or other codecs.
    extradata: bytes | None = None
    #: Audio: the packet is an ADTS frame (copied from an MPEG-TS input).
    adts: bool = False
    #: Audio: the frame's duration on `time_base` (0: unknown).
    duration: int = 0

    @property
    def ms(self) -> int:
        """The dts in milliseconds (RTMP/FLV timestamps)."""
        return int(self.dts * self.time_base * 1000)

    @property
    def cts_ms(self) -> int:
        """pts - dts in milliseconds (FLV composition time; 0 without B-frames)."""
        return int((self.pts - self.dts) * self.time_base * 1000)
