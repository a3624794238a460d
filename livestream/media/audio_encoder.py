"""Input audio to output packets: copied when every output can carry the codec as it is,
transcoded to AAC (48 kHz) otherwise.

Ingests time every item on the 90 kHz clock. A copied frame arrives as an `EncodedPacket`
already (the ingest knows its codec and framing) and passes through; a decoded frame is
encoded here, and the encoder times its packets from its input frames'.
"""

from __future__ import annotations

from fractions import Fraction

import av
from av.stream import Stream

from .drain import drain
from .packets import OUTPUT_TIME_BASE, EncodedPacket

__all__ = ["AudioEncoder"]

#: The transcoded output's rate and bitrate.
AAC_RATE = 48000
AAC_BITRATE = 128_000


class AudioEncoder:
    """One stream's audio output; one thread uses it (the session's encode thread)."""

    def __init__(self) -> None:
        self._ctx: av.AudioCodecContext | None = None
        self._layout: str | None = None
        self.packets = 0
        self.dropped = 0

    def encode(self, item: EncodedPacket | av.AudioFrame) -> list[EncodedPacket]:
        """A copied packet passes as it is; a decoded frame is encoded (packets as they come)."""
        if isinstance(item, EncodedPacket):
            self.packets += 1
            return [item]
        return self._transcode(item)

    def flush(self) -> list[EncodedPacket]:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return []
        return self._packets(ctx, drain(ctx))

    def _transcode(self, frame: av.AudioFrame) -> list[EncodedPacket]:
        layout = "stereo" if frame.layout.nb_channels > 1 else "mono"
        out: list[EncodedPacket] = []
        if self._ctx is not None and layout != self._layout:
            out += self.flush()
        if self._ctx is None:
            ctx = av.CodecContext.create("aac", "w")
            assert isinstance(ctx, av.AudioCodecContext)
            ctx.sample_rate, ctx.layout, ctx.format = AAC_RATE, layout, "fltp"
            ctx.bit_rate = AAC_BITRATE
            ctx.time_base = Fraction(1, AAC_RATE)
            ctx.open()
            self._ctx, self._layout = ctx, layout
        return out + self._packets(self._ctx, self._ctx.encode(frame))

    def _packets(self, ctx: av.AudioCodecContext, packets: list[av.Packet[Stream]]) -> list[EncodedPacket]:
        out = []
        extradata = bytes(ctx.extradata) if ctx.extradata else None
        for packet in packets:
            if packet.pts is None or packet.time_base is None:
                continue
            pts = round(packet.pts * packet.time_base / OUTPUT_TIME_BASE)
            if pts < 0:
                # The encoder's priming packet, timed before the first frame: MPEG-TS would wrap
                # it to 2^33 (26 hours ahead) and FLV to 2^32 ms. Its samples are the encoder's
                # delay, not input audio.
                self.dropped += 1
                continue
            out.append(
                EncodedPacket(
                    "audio",
                    "aac",
                    bytes(packet),
                    pts,
                    pts,
                    OUTPUT_TIME_BASE,
                    sample_rate=ctx.sample_rate,
                    channels=ctx.channels,
                    extradata=extradata,
                    duration=round((ctx.frame_size or 1024) * 90000 / ctx.sample_rate),
                )
            )
        self.packets += len(out)
        return out
