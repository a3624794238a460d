"""When the MPEG-TS demuxer hands a PES on: at the packet that holds its last byte, not one frame
later when the next PES starts, once the input has shown that its padding marks a PES's end;
and what it does with a muxer that pads in the middle of a PES. The access units are checked
against libavformat's demuxer.

Inputs are made by the ffmpeg binary (default x264 with B-frames, AAC, ffmpeg's default muxing,
and its `segment` muxer as a gateway cuts them), fed 188 bytes at a time as they arrive."""

from __future__ import annotations

import io
from pathlib import Path

import av
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


def _when_complete(segments: list[bytes], pid: int, trust_after: int) -> tuple[list[int], int]:
    """For each PES on `pid`, the index of the packet at which the demuxer should hand it on:
    its own last packet if that is padded (payload under 184 bytes) and `trust_after` earlier
    PES ended padded at the next PES's start; else the packet that starts the next PES (or its
    segment's last packet). And how many PES ended padded."""
    known: list[int] = []
    padded_total = learned = 0
    building: tuple[int, bool] | None = None  # (last packet so far, padded)
    index = 0

    def done(at_next: int, by_next_pes: bool) -> None:
        nonlocal padded_total, learned
        assert building is not None
        last, padded = building
        early = padded and learned >= trust_after
        known.append(last if early else at_next)
        padded_total += padded
        learned += padded and by_next_pes and not early

    for segment in segments:
        for at in range(0, len(segment), TS):
            pkt = segment[at : at + TS]
            if ((pkt[1] & 0x1F) << 8 | pkt[2]) == pid:
                if pkt[1] & 0x40 and building is not None:
                    done(index, by_next_pes=True)
                building = (index, bool(pkt[3] & 0x20))
            index += 1
        if building is not None:
            done(index - 1, by_next_pes=False)
            building = None
    return known, padded_total


def _pyav_video(segments: list[bytes]) -> list[tuple[int | None, bytes]]:
    """(pts, access unit) of every video packet as libavformat's demuxer reads the segments."""
    units: list[tuple[int | None, bytes]] = []
    for segment in segments:
        with av.open(io.BytesIO(segment), format="mpegts") as container:
            units += [(p.pts, bytes(p)) for p in container.demux(container.streams.video[0]) if p.size]
    return units


def _video_pid(segments: list[bytes]) -> int:
    return next(u.stream.pid for _, u in _feed_by_packet(segments[:1])[0] if u.stream.kind == "video")


def _video(units: list[tuple[int, PesUnit]]) -> list[tuple[int | None, bytes]]:
    return [(u.pts, u.payload) for _, u in units if u.stream.kind == "video"]


@pytest.fixture(scope="module")
def ffmpeg_segments(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    if not Path(FFMPEG).exists():
        pytest.skip("no ffmpeg binary")
    return make_ts_segments(AvSource(seconds=3.0, size=64), tmp_path_factory.mktemp("segments"))


def test_each_video_frame_leaves_at_its_last_packet(ffmpeg_segments: list[bytes]) -> None:
    units, demuxer = _feed_by_packet(ffmpeg_segments)
    video = [(i, u) for i, u in units if u.stream.kind == "video"]
    known, padded = _when_complete(ffmpeg_segments, _video_pid(ffmpeg_segments), trust_after=1)
    assert len(video) == 90 == len(known)
    assert padded > 80  # the rest fill their last packet exactly
    # The first padded end teaches it; from then on a padded packet ends its PES.
    assert [i for i, _ in video] == known
    assert demuxer.padding_ends_pes and demuxer.dropped_pes == 0
    # The same access units as libavformat's demuxer.
    assert _video(units) == _pyav_video(ffmpeg_segments)


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


def test_a_muxer_that_pads_mid_pes_is_waited_out_without_loss(ffmpeg_segments: list[bytes]) -> None:
    pid = _video_pid(ffmpeg_segments)
    padded = [_pad_mid_pes(s, pid) for s in ffmpeg_segments]
    units, demuxer = _feed_by_packet(padded)
    assert not demuxer.padding_ends_pes and demuxer.dropped_pes == 0
    assert _video(units) == _pyav_video(ffmpeg_segments)


def test_padding_mid_pes_after_trust_costs_one_frame(ffmpeg_segments: list[bytes]) -> None:
    """Trusted on the first segment, then the muxer changes: one frame goes on cut short, every
    later one whole."""
    pid = _video_pid(ffmpeg_segments)
    mixed = [ffmpeg_segments[0], *(_pad_mid_pes(s, pid) for s in ffmpeg_segments[1:])]
    units, demuxer = _feed_by_packet(mixed)
    assert not demuxer.padding_ends_pes and demuxer.dropped_pes == 1
    video, expected = _video(units), _pyav_video(ffmpeg_segments)
    assert video[:30] == expected[:30]
    cut = video[30]
    assert cut[0] == expected[30][0] and cut[1] != expected[30][1] and expected[30][1].startswith(cut[1])
    assert video[31:] == expected[31:]
