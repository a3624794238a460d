"""A video jitter buffer that hands a frame on as soon as its last packet (RTP marker) is in.

aiortc's `JitterBuffer` releases a frame only when the first packet of the *next* frame
arrives, so every aiortc receiver adds one frame interval (33 ms at 30 fps) to the path: the
engine's WHIP ingest, and an aiortc WHEP client. Browsers release on the marker bit. This
subclass does too when every packet of the frame, from the buffer's origin to the marked one,
is present; otherwise (loss, reordering) it falls back to aiortc's rule. `install()` makes
aiortc's receivers use it for video (process-wide, like the aioice host patch).

Limit: `add()` returns at most one frame, so once a gap has made frames queue up, each later
frame again leaves with the next frame's first packet (aiortc's latency, never worse) until
the connection ends.
"""

from __future__ import annotations

from typing import Any

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

__all__ = ["MarkerJitterBuffer", "install"]


class MarkerJitterBuffer(JitterBuffer):
    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is not None or not self._is_video or not packet.marker or self._origin is None:
            return pli_flag, frame
        packets: list[RtpPacket] = []
        timestamp = None
        for count in range(self.capacity):
            candidate = self._packets[(self._origin + count) % self._capacity]
            if candidate is None:
                return pli_flag, None  # a gap: wait, as aiortc does
            if timestamp is None:
                timestamp = candidate.timestamp
            elif candidate.timestamp != timestamp:
                return pli_flag, None  # an older frame is still incomplete
            packets.append(candidate)
            if candidate is packet:
                break
        else:
            return pli_flag, None
        self.remove(len(packets))
        return pli_flag, JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)  # type: ignore[attr-defined]


class _Factory:
    """Stands in for `JitterBuffer` in aiortc's receiver module: video gets the marker rule."""

    def __call__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> Any:
        if is_video:
            return MarkerJitterBuffer(capacity=capacity, prefetch=prefetch, is_video=True)
        return JitterBuffer(capacity=capacity, prefetch=prefetch, is_video=is_video)


def install() -> None:
    aiortc.rtcrtpreceiver.JitterBuffer = _Factory()  # type: ignore[misc,assignment]
