"""MPEG-TS bytes to PES units, as soon as each is complete (sans-IO).

Why by hand: libavformat's MPEG-TS demuxer hands a video PES on when the next one starts, and
its H.264 parser then holds that access unit until it has seen the start of the next one, so
every frame leaves the demuxer two frames late (66 ms at 30 fps). Here a PES goes on at its last
byte:
- a PES with a length (audio) is complete at its last byte;
- a video PES, whose length muxers leave open, is complete at the TS packet that pads its end
  with adaptation-field stuffing (a PES starts a packet, so its last packet is padded unless the
  PES fills it exactly: ffmpeg's muxer, go-livepeer's segmenter and ours all pad that way), or
  else when the next PES of its stream starts (one frame late), or when its segment ends.
A muxer may legally pad in the middle of a PES too (none seen yet), so the padding is trusted
only once it has ended an open PES of the input (the first, a keyframe); until then, and for
good once a padded packet is followed by more of its PES, a PES waits for the next one. A muxer that starts
padding mid-PES after that is caught at the next packet: that one frame is lost.

    demuxer = TsDemuxer()
    for unit in demuxer.feed(data):       # PesUnit: stream, pts/dts (90 kHz), payload
        ...
    for unit in demuxer.end_segment():    # what the segment's end completes
        ...

Programs: the first program of the PAT; streams as its PMT lists them. A PES cut by a segment
boundary continues in the next segment when its continuity counter does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AUDIO_STREAM_TYPES", "VIDEO_STREAM_TYPES", "PesUnit", "TsDemuxer", "TsError", "TsStream"]

_PACKET = 188
#: How many open PES must have ended padded before padding is taken to end one: the first PES
#: (a keyframe, many packets) shows whether the muxer pads mid-PES, at one frame's wait.
_TRUST_AFTER = 1
#: PMT stream_type -> codec (ISO/IEC 13818-1 table 2-34; ATSC A/52 for AC-3).
VIDEO_STREAM_TYPES = {0x1B: "h264", 0x24: "hevc"}
AUDIO_STREAM_TYPES = {0x0F: "aac", 0x11: "aac_latm", 0x03: "mp3", 0x04: "mp3", 0x81: "ac3", 0x87: "eac3"}
#: Descriptors of a private stream (stream_type 0x06) that name its audio codec.
_AC3_DESCRIPTOR, _EAC3_DESCRIPTOR, _REGISTRATION_DESCRIPTOR = 0x6A, 0x7A, 0x05


class TsError(ValueError):
    """The bytes are not MPEG-TS."""


@dataclass(frozen=True, slots=True)
class TsStream:
    pid: int
    kind: str  # "video" or "audio"
    codec: str


@dataclass(slots=True)
class PesUnit:
    stream: TsStream
    pts: int | None
    dts: int | None
    payload: bytes


@dataclass(slots=True)
class _Building:
    stream: TsStream
    pts: int | None
    dts: int | None
    #: The PES's payload length (0: open, ends at the next PES).
    size: int
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    cc: int = -1
    #: Its last packet so far was padded.
    padded: bool = False


def _timestamp(b: bytes, at: int) -> int:
    return (
        ((b[at] >> 1) & 0x07) << 30 | b[at + 1] << 22 | (b[at + 2] >> 1) << 15 | b[at + 3] << 7 | b[at + 4] >> 1
    )


class TsDemuxer:
    """See the module docstring. `streams` is the current program's streams by PID."""

    def __init__(self) -> None:
        self._pmt_pid: int | None = None
        self.streams: dict[int, TsStream] = {}
        self._building: dict[int, _Building] = {}
        self._rest = b""
        #: Bytes of a packet with a bad sync byte (the input is not MPEG-TS, or damaged).
        self.bad_packets = 0
        self.dropped_pes = 0
        #: Whether a padded packet ends an open-length PES: once `_TRUST_AFTER` open PES ended
        #: padded, and never after a padded packet was followed by more of its PES.
        self.padding_ends_pes = False
        self._padded_ends = 0
        self._padding_refuted = False
        #: PID -> continuity counter of the padded packet that last ended an open PES.
        self._ended_at: dict[int, int] = {}

    def feed(self, data: bytes) -> list[PesUnit]:
        buf = self._rest + data if self._rest else data
        end = len(buf) - len(buf) % _PACKET
        self._rest = buf[end:]
        out: list[PesUnit] = []
        for i in range(0, end, _PACKET):
            if buf[i] != 0x47:
                self.bad_packets += 1
                continue
            self._packet(buf[i : i + _PACKET], out)
        return out

    def end_segment(self) -> list[PesUnit]:
        """The segment ended: open-length PES are complete; a PES with bytes still to come may
        continue in the next segment. Tables are read again from the next segment."""
        self._rest = b""
        out = []
        for pid, unit in list(self._building.items()):
            if unit.size == 0:
                out.append(self._complete(pid))
        self._pmt_pid = None
        return out

    # --- packets --------------------------------------------------------------------------

    def _packet(self, pkt: bytes, out: list[PesUnit]) -> None:
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        start = bool(pkt[1] & 0x40)
        control = (pkt[3] >> 4) & 0x03
        cc = pkt[3] & 0x0F
        if pkt[1] & 0x80 or not control & 0x01:  # transport error, or no payload
            return
        offset = 4 + (1 + pkt[4] if control & 0x02 else 0)
        if offset >= _PACKET:
            return
        payload = pkt[offset:]
        if pid == 0:
            if start:
                self._pat(payload)
        elif pid == self._pmt_pid:
            if start:
                self._pmt(payload)
        elif pid in self.streams:
            self._pes(pid, start, cc, payload, bool(control & 0x02) and _stuffed(pkt), out)

    def _section(self, payload: bytes) -> bytes | None:
        pointer = payload[0]
        section = payload[1 + pointer :]
        if len(section) < 3:
            return None
        length = ((section[1] & 0x0F) << 8) | section[2]
        return section[: 3 + length] if len(section) >= 3 + length else None

    def _pat(self, payload: bytes) -> None:
        section = self._section(payload)
        if section is None or section[0] != 0x00:
            return
        for i in range(8, len(section) - 4, 4):
            program = (section[i] << 8) | section[i + 1]
            if program != 0:  # 0 is the network PID
                self._pmt_pid = ((section[i + 2] & 0x1F) << 8) | section[i + 3]
                return

    def _pmt(self, payload: bytes) -> None:
        section = self._section(payload)
        if section is None or len(section) < 16 or section[0] != 0x02:  # 12-byte header + CRC
            return
        info = ((section[10] & 0x0F) << 8) | section[11]
        i, end = 12 + info, len(section) - 4
        streams: dict[int, TsStream] = {}
        while i + 5 <= end:
            stream_type, pid = section[i], ((section[i + 1] & 0x1F) << 8) | section[i + 2]
            es_len = ((section[i + 3] & 0x0F) << 8) | section[i + 4]
            descriptors = section[i + 5 : i + 5 + es_len]
            i += 5 + es_len
            if stream_type in VIDEO_STREAM_TYPES:
                streams[pid] = TsStream(pid, "video", VIDEO_STREAM_TYPES[stream_type])
            elif stream_type in AUDIO_STREAM_TYPES:
                streams[pid] = TsStream(pid, "audio", AUDIO_STREAM_TYPES[stream_type])
            elif stream_type == 0x06 and (codec := _private_codec(descriptors)) is not None:
                streams[pid] = TsStream(pid, "audio", codec)
        for pid in [p for p in self._building if streams.get(p) != self.streams.get(p)]:
            del self._building[pid]
        self.streams = streams

    def _pes(self, pid: int, start: bool, cc: int, payload: bytes, padded: bool, out: list[PesUnit]) -> None:
        unit = self._building.get(pid)
        ended = self._ended_at.pop(pid, None)
        if start:
            if unit is not None:
                if unit.size and unit.received < unit.size:
                    self.dropped_pes += 1  # cut short
                    del self._building[pid]
                else:
                    if not unit.size:
                        self._learn(ended_padded=unit.padded)
                    out.append(self._complete(pid))
            self._begin(pid, cc, payload, padded, out)
            return
        if unit is None:
            if ended is not None and cc == (ended + 1) & 0x0F:
                # The PES we ended at a padded packet goes on: it went to the decoder cut short.
                self._refute()
                self.dropped_pes += 1
            return  # the middle of a PES whose start we never saw
        if cc != (unit.cc + 1) & 0x0F:
            if cc == unit.cc:
                return  # a duplicate packet
            self.dropped_pes += 1  # lost packets: the PES is damaged
            del self._building[pid]
            return
        unit.cc = cc
        if unit.padded:
            self._refute()  # a padded packet, and the PES goes on
        self._append(pid, unit, payload, padded, out)

    def _begin(self, pid: int, cc: int, payload: bytes, padded: bool, out: list[PesUnit]) -> None:
        if len(payload) < 9 or payload[0:3] != b"\x00\x00\x01":
            return
        size = (payload[4] << 8) | payload[5]
        flags, header = payload[7], payload[8]
        pts = _timestamp(payload, 9) if flags & 0x80 and len(payload) >= 14 else None
        dts = _timestamp(payload, 14) if flags & 0xC0 == 0xC0 and len(payload) >= 19 else pts
        body = 9 + header
        unit = _Building(self.streams[pid], pts, dts, max(0, size - 3 - header) if size else 0, cc=cc)
        self._building[pid] = unit
        self._append(pid, unit, payload[body:], padded, out)

    def _append(self, pid: int, unit: _Building, data: bytes, padded: bool, out: list[PesUnit]) -> None:
        if unit.size:
            data = data[: unit.size - unit.received]
        unit.parts.append(data)
        unit.received += len(data)
        unit.padded = padded
        if unit.size and unit.received >= unit.size:
            out.append(self._complete(pid))
        elif not unit.size and padded and self.padding_ends_pes:
            self._ended_at[pid] = unit.cc
            out.append(self._complete(pid))

    def _learn(self, *, ended_padded: bool) -> None:
        """An open PES ended at the next one's start: was its last packet padded?"""
        if self._padding_refuted:
            return
        self._padded_ends += ended_padded
        if self._padded_ends >= _TRUST_AFTER:
            self.padding_ends_pes = True

    def _refute(self) -> None:
        self._padding_refuted = True
        self.padding_ends_pes = False

    def _complete(self, pid: int) -> PesUnit:
        unit = self._building.pop(pid)
        return PesUnit(unit.stream, unit.pts, unit.dts, b"".join(unit.parts))


def _stuffed(pkt: bytes) -> bool:
    """Whether a packet's adaptation field (present) ends in stuffing bytes: its payload is
    short, which a muxer does only at the end of a PES."""
    length, flags = pkt[4], pkt[5]
    if length == 0 or flags == 0:
        return True  # one stuffing byte; a field that says nothing, as padding
    used = 1
    if flags & 0x10:  # PCR
        used += 6
    if flags & 0x08:  # OPCR
        used += 6
    if flags & 0x04:  # splice countdown
        used += 1
    if flags & 0x02 and 5 + used < _PACKET:  # transport private data
        used += 1 + pkt[5 + used]
    if flags & 0x01 and 5 + used < _PACKET:  # adaptation field extension
        used += 1 + pkt[5 + used]
    return length > used


def _private_codec(descriptors: bytes) -> str | None:
    """The audio codec a private stream's descriptors name (Opus, AC-3, E-AC-3), if any."""
    i = 0
    while i + 2 <= len(descriptors):
        tag, length = descriptors[i], descriptors[i + 1]
        body = descriptors[i + 2 : i + 2 + length]
        if tag == _REGISTRATION_DESCRIPTOR and body[:4] == b"Opus":
            return "opus"
        if tag == _AC3_DESCRIPTOR:
            return "ac3"
        if tag == _EAC3_DESCRIPTOR:
            return "eac3"
        i += 2 + length
    return None
