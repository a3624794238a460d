from __future__ import annotations

from aiortc.rtp import RtpPacket

from livestream.webrtc.jitter import MarkerJitterBuffer


def _packet(seq: int, ts: int, marker: bool) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=marker)
    p._data = bytes([seq % 256])  # type: ignore[attr-defined]
    return p


def test_frames_leave_on_their_marker_and_gaps_wait() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    assert jb.add(_packet(10, 100, False)) == (False, None)
    _, frame = jb.add(_packet(11, 100, True))
    assert frame is not None and frame.timestamp == 100 and frame.data == bytes([10, 11])
    # A frame with a missing packet is held until aiortc's own rule releases it.
    assert jb.add(_packet(12, 200, False))[1] is None
    assert jb.add(_packet(14, 200, True))[1] is None
    _, frame = jb.add(_packet(13, 200, False))
    assert frame is None  # complete now, but its marker came before: the next frame releases it
    _, frame = jb.add(_packet(15, 300, True))
    assert frame is not None and frame.timestamp == 200 and frame.data == bytes([12, 13, 14])
