"""When the MPEG-TS demuxer hands a PES on: at the packet that holds its last byte, not one frame
later when the next PES starts; and what it does with a muxer that pads in the middle of a PES.

Inputs are made by the ffmpeg binary (default x264 with B-frames, AAC, ffmpeg's default muxing,
and its `segment` muxer as a gateway cuts them), fed 188 bytes at a time as they arrive."""

from __future__ import annotations

from pathlib import Path

import pytest
from ffmpeg_inputs import FFMPEG, AvSource, make_ts_segments

from livestream.media.ts_demux import PesUnit, TsDemuxer

TS = 188


def _feed_by_packet(segments: list[bytes]) -> tuple[list[tuple[int, PesUnit]], TsDemuxer]:
    """(index of the packet whose arrival completed it, unit) for every PES, in order."""
    demuxer, units, index = TsDemuxer(), [], 0
    for segment in segments:
        for at in range(0, len(segment), TS):
            units += [(index, u) for u in demuxer.feed(segment[at : at + TS])]
            index += 1
        units += [(index - 1, u) for u in demuxer.end_segment()]
    return units, demuxer


def _when_complete(segments: list[bytes], pid: int) -> tuple[list[int], int]:
    """For each PES on `pid`, the index of the packet at which a reader can know it is whole:
    its own last packet if padded (payload under 184 bytes), else the packet that starts the
    next PES (or its segment's last packet); and how many were padded."""
    known: list[int] = []
    padded = 0
    building: tuple[int, bool] | None = None  # (last packet so far, padded)
    index = 0
    for segment in segments:
        for at in range(0, len(segment), TS):
            pkt = segment[at : at + TS]
            if ((pkt[1] & 0x1F) << 8 | pkt[2]) == pid:
                if pkt[1] & 0x40 and building is not None:
                    known.append(building[0] if building[1] else index)
                    padded += building[1]
                building = (index, bool(pkt[3] & 0x20))
            index += 1
        if building is not None:
            known.append(building[0] if building[1] else index - 1)
            padded += building[1]
            building = None
    return known, padded


@pytest.fixture(scope="module")
def ffmpeg_segments(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    if not Path(FFMPEG).exists():
        pytest.skip("no ffmpeg binary")
    return make_ts_segments(AvSource(seconds=3.0, size=64), tmp_path_factory.mktemp("segments"))


def test_each_video_frame_leaves_at_its_last_packet(ffmpeg_segments: list[bytes]) -> None:
    units, demuxer = _feed_by_packet(ffmpeg_segments)
    video = [(i, u) for i, u in units if u.stream.kind == "video"]
    known, padded = _when_complete(ffmpeg_segments, video[0][1].stream.pid)
    assert len(video) == 90 == len(known)
    assert padded > 80  # the rest fill their last packet exactly
    assert [i for i, _ in video] == known
    assert demuxer.padding_ends_pes and demuxer.dropped_pes == 0
    # The same access units as a demuxer that waits for the next PES.
    waiting = TsDemuxer()
    waiting.padding_ends_pes = False
    whole = [u for s in ffmpeg_segments for u in [*waiting.feed(s), *waiting.end_segment()]]
    assert [(u.pts, u.dts, u.payload) for u in whole if u.stream.kind == "video"] == [
        (u.pts, u.dts, u.payload) for _, u in video
    ]
    assert [u.payload for u in whole if u.stream.kind == "audio"] == [u.payload for _, u in units if u.stream.kind == "audio"]


def _pad_mid_pes(segment: bytes, pid: int) -> bytes:
    """`segment` with each video PES packed again, its first packet padded by one byte: legal,
    but no muxer here writes it. The PES's packets take the place of its first one."""
    packets = [segment[at : at + TS] for at in range(0, len(segment), TS)]
    pes: list[bytearray] = []
    slots: list[int] = []  # where each PES's packets go
    out: list[bytes] = []
    for pkt in packets:
        if ((pkt[1] & 0x1F) << 8 | pkt[2]) != pid:
            out.append(pkt)
            continue
        control = (pkt[3] >> 4) & 0x03
        payload = pkt[5 + pkt[4] :] if control & 0x02 else pkt[4:]
        if pkt[1] & 0x40:
            pes.append(bytearray())
            slots.append(len(out))
            out.append(b"")
        pes[-1] += payload
    cc = 0
    for slot, data in zip(slots, pes, strict=True):
        chunks = [bytes(data[:183])] + [bytes(data[i : i + 184]) for i in range(183, len(data), 184)]
        packed = b""
        for n, chunk in enumerate(chunks):
            free = 184 - len(chunk)
            header = bytes((0x47, (0x40 if n == 0 else 0) | pid >> 8, pid & 0xFF, (0x30 if free else 0x10) | cc))
            stuffing = b"" if not free else b"\x00" if free == 1 else bytes((free - 1, 0)) + b"\xff" * (free - 2)
            packed += header + stuffing + chunk
            cc = (cc + 1) & 0x0F
        out[slot] = packed
    return b"".join(out)


def test_a_muxer_that_pads_mid_pes_costs_one_frame_then_is_waited_out(ffmpeg_segments: list[bytes]) -> None:
    pid = next(u.stream.pid for _, u in _feed_by_packet(ffmpeg_segments[:1])[0] if u.stream.kind == "video")
    padded = [_pad_mid_pes(s, pid) for s in ffmpeg_segments]
    units, demuxer = _feed_by_packet(padded)
    video = [u for _, u in units if u.stream.kind == "video"]
    assert not demuxer.padding_ends_pes and demuxer.dropped_pes == 1
    reference = TsDemuxer()
    reference.padding_ends_pes = False
    expected = [u for s in ffmpeg_segments for u in [*reference.feed(s), *reference.end_segment()] if u.stream.kind == "video"]
    # The first frame went on cut short; every later one whole, in order.
    assert video[0].payload != expected[0].payload and expected[0].payload.startswith(video[0].payload)
    assert [(u.pts, u.payload) for u in video[1:]] == [(u.pts, u.payload) for u in expected[1:]]
