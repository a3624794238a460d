"""Encoded packets to standalone MPEG-TS segments, each packet written the moment it arrives.

Why by hand: libavformat's muxer interleaves its input by DTS (`av_interleaved_write_frame`,
the only write PyAV exposes), so it holds every video packet until an audio packet with a
later timestamp arrives, or `max_interleave_delta` passes. Live output must not wait for
audio. MPEG-TS is simple enough to write directly (ISO/IEC 13818-1: PAT, PMT, PES in 188-byte
packets); this module is that, for H.264 with AAC, MP2/MP3 or AC-3/E-AC-3 audio, and it needs
no seeking, so the segment boundaries are ours too: a new segment starts, with PAT and PMT,
before every video keyframe, so each segment decodes on its own.

    muxer = TsMuxer()
    for packet in packets:                  # EncodedPacket, in the order they should go out
        for chunk in muxer.mux(packet):     # bytes, or SEGMENT_START before a new segment
            ...
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Final

from .audio_frames import adts_header
from .packets import EncodedPacket

__all__ = ["SEGMENT_START", "TsMuxer"]

#: Yielded by `TsMuxer.mux` before the first bytes of a new segment.
SEGMENT_START: Final = None

_PACKET = 188
_PAYLOAD = 184
_PAT_PID, _PMT_PID, _VIDEO_PID, _AUDIO_PID = 0x0000, 0x1000, 0x0100, 0x0101
#: stream_type and PES stream_id per codec (ISO/IEC 13818-1 table 2-34; ATSC A/52 for AC-3).
_STREAM_TYPES = {"h264": 0x1B, "aac": 0x0F, "mp3": 0x03, "mp2": 0x03, "ac3": 0x81, "eac3": 0x87}
_STREAM_IDS = {"h264": 0xE0, "aac": 0xC0, "mp3": 0xC0, "mp2": 0xC0, "ac3": 0xBD, "eac3": 0xBD}
_AUD = b"\x00\x00\x00\x01\x09\xf0"
_MASK33 = (1 << 33) - 1


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """The CRC of PSI sections (MSB first, no reflection, no final XOR)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _timestamp(prefix: int, ts: int) -> bytes:
    ts &= _MASK33
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def _pcr(base: int) -> bytes:
    base &= _MASK33
    return bytes(((base >> 25) & 0xFF, (base >> 17) & 0xFF, (base >> 9) & 0xFF, (base >> 1) & 0xFF, ((base & 1) << 7) | 0x7E, 0))


def _section(table_id: int, ident: int, version: int, body: bytes) -> bytes:
    length = 5 + len(body) + 4
    head = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF, ident >> 8, ident & 0xFF, 0xC1 | (version << 1), 0, 0))
    section = head + body
    return section + crc32_mpeg2(section).to_bytes(4, "big")


class TsMuxer:
    """Sans-IO MPEG-TS writer for one output stream; see the module docstring.

    Timestamps are taken as they are (90 kHz, the `EncodedPacket` time base of the live path).
    PCR rides on the video PID at each video packet, equal to its DTS.
    """

    def __init__(self) -> None:
        self._cc: dict[int, int] = {}
        self._audio_codec: str | None = None
        self._pmt_version = 0
        self._started = False
        #: Segments started, and bytes written.
        self.segments = 0
        self.bytes = 0

    def mux(self, packet: EncodedPacket) -> Iterator[bytes | None]:
        """The TS bytes for `packet`, preceded by `SEGMENT_START` when a segment begins with it.
        Packets before the first video keyframe are dropped (a segment must start with one)."""
        if packet.kind == "video":
            if packet.keyframe:
                self._started = True
                self.segments += 1
                yield SEGMENT_START
                yield self._tables()
            elif not self._started:
                return
            data = packet.data if packet.data.startswith(_AUD) else _AUD + packet.data
            yield self._pes(_VIDEO_PID, 0xE0, data, packet.pts, packet.dts, pcr=packet.dts, key=packet.keyframe)
            return
        if packet.codec not in _STREAM_TYPES:
            raise ValueError(f"MPEG-TS output cannot carry {packet.codec} audio")
        if packet.codec != self._audio_codec:
            self._audio_codec = packet.codec
            if self._started:  # the stream's audio changed mid-segment: announce it now
                self._pmt_version = (self._pmt_version + 1) & 0x1F
                yield self._tables()
        if not self._started:
            return
        data = packet.data
        if packet.codec == "aac" and not packet.adts:
            if not packet.extradata:
                raise ValueError("raw AAC needs its AudioSpecificConfig to go into MPEG-TS")
            data = adts_header(packet.extradata, len(data)) + data
        yield self._pes(_AUDIO_PID, _STREAM_IDS[packet.codec], data, packet.pts, packet.pts)

    # --- tables ---------------------------------------------------------------------------

    def _tables(self) -> bytes:
        pat = _section(0x00, 1, 0, bytes((0, 1, 0xE0 | (_PMT_PID >> 8), _PMT_PID & 0xFF)))
        streams = [(_STREAM_TYPES["h264"], _VIDEO_PID)]
        if self._audio_codec is not None:
            streams.append((_STREAM_TYPES[self._audio_codec], _AUDIO_PID))
        body = bytes((0xE0 | (_VIDEO_PID >> 8), _VIDEO_PID & 0xFF, 0xF0, 0))
        for stream_type, pid in streams:
            body += bytes((stream_type, 0xE0 | (pid >> 8), pid & 0xFF, 0xF0, 0))
        pmt = _section(0x02, 1, self._pmt_version, body)
        return self._psi(_PAT_PID, pat) + self._psi(_PMT_PID, pmt)

    def _psi(self, pid: int, section: bytes) -> bytes:
        payload = b"\x00" + section
        return self._header(pid, True, 1) + payload + b"\xff" * (_PAYLOAD - len(payload))

    # --- packets --------------------------------------------------------------------------

    def _header(self, pid: int, start: bool, adaptation: int) -> bytes:
        cc = self._cc.get(pid, -1) + 1 & 0x0F
        self._cc[pid] = cc
        return bytes((0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF, (adaptation << 4) | cc))

    def _pes(
        self, pid: int, stream_id: int, data: bytes, pts: int, dts: int, *, pcr: int | None = None, key: bool = False
    ) -> bytes:
        if pts != dts:
            header = bytes((0x84, 0xC0, 10)) + _timestamp(3, pts) + _timestamp(1, dts)
        else:
            header = bytes((0x84, 0x80, 5)) + _timestamp(2, pts)
        length = len(header) + len(data)
        size = length if length <= 0xFFFF and stream_id != 0xE0 else 0  # 0: unbounded (video)
        pes = b"\x00\x00\x01" + bytes((stream_id, size >> 8, size & 0xFF)) + header + data
        total = len(pes)
        out = bytearray()
        # The first TS packet carries the PCR and the random-access flag in its adaptation field.
        fields = b""
        if pcr is not None:
            fields = bytes((0x50 if key else 0x10,)) + _pcr(pcr)
        elif key:
            fields = b"\x40"
        first = min(total, _PAYLOAD - (1 + len(fields) if fields else 0))
        self._packet(out, pid, True, fields, pes[:first])
        # Full packets in between: header and 184 payload bytes, nothing else to build.
        cc = self._cc[pid]
        pos = first
        headers = _full_headers(pid)
        while total - pos >= _PAYLOAD:
            cc = (cc + 1) & 0x0F
            out += headers[cc]
            out += pes[pos : pos + _PAYLOAD]
            pos += _PAYLOAD
        self._cc[pid] = cc
        if pos < total:
            self._packet(out, pid, False, b"", pes[pos:])
        self.bytes += len(out)
        return bytes(out)

    def _packet(self, out: bytearray, pid: int, start: bool, fields: bytes, chunk: bytes) -> None:
        """One TS packet of `chunk`, padded with an adaptation field (carrying `fields`) if short."""
        free = _PAYLOAD - len(chunk)
        if free == 0 and not fields:
            out += self._header(pid, start, 1)
        else:
            if fields:
                adaptation = bytes((free - 1,)) + fields + b"\xff" * (free - 1 - len(fields))
            elif free == 1:
                adaptation = b"\x00"
            else:
                adaptation = bytes((free - 1, 0)) + b"\xff" * (free - 2)
            out += self._header(pid, start, 3)
            out += adaptation
        out += chunk


@functools.cache
def _full_headers(pid: int) -> tuple[bytes, ...]:
    """The 4-byte headers of a payload-only packet of `pid`, by continuity counter."""
    return tuple(bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | cc)) for cc in range(16))
