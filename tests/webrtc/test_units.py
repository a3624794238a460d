"""Small units: the marker-release jitter buffer, the WHEP sink's timestamps."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from livestream.webrtc.aiortc_patches import MarkerJitterBuffer


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


def test_whep_sink_keeps_pts_increasing_across_an_encoder_restart() -> None:
    from fractions import Fraction

    from livestream.egress import EncodedPacket
    from livestream.webrtc.engine import WhepSink

    sink = WhepSink("s", lambda: None)
    tb = Fraction(1, 90000)
    seen = [sink._monotonic_pts(EncodedPacket("video", "h264", b"", p, p, tb)) for p in (0, 3000, 6000, 0, 3000)]
    assert seen == sorted(seen) and len(set(seen)) == 5
    assert seen[4] - seen[3] == 3000  # spacing after the restart follows the new clock
