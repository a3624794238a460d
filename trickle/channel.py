"""Per-channel sequencing state (go-livepeer's `Stream`): the segment ring and `nextWrite`.

Pure bookkeeping with an injectable clock; the HTTP handlers in `server.py` drive it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .protocol import CURRENT_SEQ, NEXT_SEQ
from .segment import SegmentBuffer

__all__ = ["Channel", "ReadLookup"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadLookup:
    """What `Channel.get_for_read` found."""

    #: The segment, or None when the ring does not hold `seq` (answer 470, or 200 when closed).
    segment: SegmentBuffer | None
    #: The requested seq with -1/-2 resolved.
    seq: int
    #: The channel's `nextWrite` at lookup time (`Lp-Trickle-Latest`).
    latest: int
    closed: bool


class Channel:
    """One trickle channel: a ring of `ring_size` segment slots; segment `i` lives in slot `i % ring_size`.

    `next_write` becomes `idx + 1` when a POST to `idx` gets its first byte or ends empty. It is
    not a maximum: a POST to a lower seq moves it back, exactly as in go-livepeer.
    """

    def __init__(
        self, name: str, mime_type: str, *, ring_size: int = 5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.mime_type = mime_type
        self.next_write = 0
        self.closed = False
        self._clock = clock
        self.write_time = clock()
        self._ring: list[SegmentBuffer | None] = [None] * ring_size

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} next={self.next_write} closed={self.closed}>"

    def segments(self) -> Iterator[SegmentBuffer]:
        return (s for s in self._ring if s is not None)

    def segment_at(self, seq: int) -> SegmentBuffer | None:
        """The segment `seq` when the ring still holds it."""
        if seq < 0:
            return None
        segment = self._ring[seq % len(self._ring)]
        return segment if segment is not None and segment.seq == seq else None

    def get_for_write(self, seq: int) -> SegmentBuffer:
        """Segment for a POST: reuse the slot's segment when it is `seq`, else close the occupant and start fresh."""
        if seq == NEXT_SEQ:
            seq = self.next_write
        slot = seq % len(self._ring)
        current = self._ring[slot]
        if current is not None:
            if current.seq == seq:
                return current
            current.close()
        segment = SegmentBuffer(seq)
        self._ring[slot] = segment
        return segment

    def get_for_read(self, seq: int) -> ReadLookup:
        """Segment for a GET; pre-creates the live edge so a subscriber can wait for it."""
        if seq == NEXT_SEQ:
            seq = self.next_write
        elif seq == CURRENT_SEQ:
            seq = max(self.next_write - 1, 0)
        segment = self.segment_at(seq)
        at_edge = seq == self.next_write or (self.next_write == 0 and seq == 1)
        if segment is None and at_edge and not self.closed:
            # The old occupant is replaced without being closed, as go-livepeer does.
            segment = SegmentBuffer(seq)
            self._ring[seq % len(self._ring)] = segment
            log.debug("channel %s: pre-created seq %d for a waiting reader", self.name, seq)
        return ReadLookup(segment, seq, self.next_write, self.closed)

    def mark_written(self, seq: int) -> None:
        """A POST to `seq` got its first byte, or ended with none."""
        self.next_write = seq + 1
        self.write_time = self._clock()

    def reset_before(self, seq: int) -> None:
        """`Lp-Trickle-Reset`: close every ring segment older than `seq`; later (preconnected) ones stay."""
        for segment in self.segments():
            if segment.seq < seq:
                segment.close()

    def close(self) -> None:
        """Close every segment (waking readers and waiting publishers) and mark the channel closed."""
        for segment in self.segments():
            segment.close()
        self._ring = [None] * len(self._ring)
        self.closed = True

    def idle_for(self) -> float:
        return self._clock() - self.write_time
