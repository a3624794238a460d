"""Frames to H.264 packets: libx264 with zero-latency settings, one encoder per stream.

No B-frames and no lookahead, so each frame's packet comes out of the same `encode` call;
an IDR every `gop_seconds` (and on request, for a viewer that joins), with SPS/PPS in front of
each, so every keyframe starts a decodable stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
from av.stream import Stream
from av.video.frame import PictureType

from .drain import drain
from .packets import OUTPUT_TIME_BASE, EncodedPacket

__all__ = ["EncoderConfig", "H264Encoder"]


@dataclass(frozen=True)
class EncoderConfig:
    """Output video settings (low-latency H.264)."""

    gop_seconds: float = 1.0
    preset: str = "superfast"
    #: Constrained Baseline: what WebRTC viewers negotiate (42e01f) for the shared encode, and
    #: what every hardware decoder takes (no CABAC or 8x8 transform; a few % more bits).
    profile: str = "baseline"
    crf: int = 23
    #: Frame rate hint for x264's rate control; timestamps come from the input.
    fps: int = 30
    #: x264 threads per session. One: sessions run in parallel, and on few cores slice threads
    #: cost more in wake-ups than they save (measured in benchmarks/live_bench.py).
    threads: int = 1


class H264Encoder:
    """Encodes frames of any size to H.264 `EncodedPacket`s (90 kHz). One thread uses it.

    A size change, or an input clock that jumps back by more than a GOP (a new source),
    restarts the encoder: its next frame is an IDR. A frame not after the previous one by less
    than that is dropped as late (`dropped_late`).
    """

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self._ctx: av.VideoCodecContext | None = None
        self._gop_ticks = round(config.gop_seconds / OUTPUT_TIME_BASE)
        self._last_pts: int | None = None
        self._last_key_pts: int | None = None
        self._keyframe_requested = False
        self.frames = 0
        self.dropped_late = 0
        self.restarts = 0

    def request_keyframe(self) -> None:
        """Any thread: the next encoded frame is an IDR."""
        self._keyframe_requested = True

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        config = self.config
        ctx = av.CodecContext.create("libx264", "w")
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = OUTPUT_TIME_BASE
        ctx.framerate = Fraction(config.fps)
        gop = max(1, round(config.fps * config.gop_seconds))
        ctx.options = {
            "preset": config.preset,
            "profile": config.profile,
            "tune": "zerolatency",
            "bf": "0",
            "crf": str(config.crf),
            "forced-idr": "1",
            "sc_threshold": "0",
            "g": str(gop * 4),
            "threads": str(config.threads),
        }
        ctx.open()
        self._last_pts = self._last_key_pts = None
        return ctx

    def encode(self, frame: av.VideoFrame, pts: int) -> list[EncodedPacket] | None:
        """Encode `frame` at output `pts` (90 kHz); None when it is dropped as late."""
        out: list[EncodedPacket] = []
        ctx = self._ctx
        if ctx is not None and (ctx.width, ctx.height) != (frame.width, frame.height):
            out += self.flush()
            self.restarts += 1
            ctx = None
        if ctx is not None and self._last_pts is not None and pts <= self._last_pts:
            if self._last_pts - pts <= self._gop_ticks:
                self.dropped_late += 1
                return None
            out += self.flush()  # the input's clock restarted (a new source): restart too
            self.restarts += 1
            ctx = None
        if ctx is None:
            ctx = self._ctx = self._open(frame.width, frame.height)
        if self._last_key_pts is None or pts - self._last_key_pts >= self._gop_ticks or self._keyframe_requested:
            self._keyframe_requested = False
            frame.pict_type = PictureType.I
            self._last_key_pts = pts
        else:
            frame.pict_type = PictureType.NONE
        frame.pts = pts
        frame.time_base = OUTPUT_TIME_BASE
        out += self._packets(ctx, ctx.encode(frame))
        self._last_pts = pts
        self.frames += 1
        return out

    def flush(self) -> list[EncodedPacket]:
        """Drain and close the encoder (the stream ended, or a restart)."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return []
        return self._packets(ctx, drain(ctx))

    @staticmethod
    def _packets(ctx: av.VideoCodecContext, packets: list[av.Packet[Stream]]) -> list[EncodedPacket]:
        out = []
        for packet in packets:
            if packet.pts is None:
                continue
            out.append(
                EncodedPacket(
                    "video",
                    "h264",
                    bytes(packet),
                    packet.pts,
                    packet.dts if packet.dts is not None else packet.pts,
                    OUTPUT_TIME_BASE,
                    keyframe=packet.is_keyframe,
                    width=ctx.width,
                    height=ctx.height,
                )
            )
        return out
