"""Draining an encoder at the end of its stream."""

from __future__ import annotations

import av
from av.stream import Stream

__all__ = ["drain"]


def drain(ctx: av.VideoCodecContext | av.AudioCodecContext) -> list[av.Packet[Stream]]:
    """The packets an encoder still holds, after which it is closed for good."""
    try:
        return list(ctx.encode(None))
    except av.EOFError:  # already drained
        return []
