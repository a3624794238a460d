"""RTMP chunk stream: bytes <-> messages. Sans-IO (no sockets, no clock).

`ChunkReader.feed(data)` returns the complete messages in `data` (plus what earlier calls left
over). It follows FFmpeg's `rtmppkt.c`, which is what OBS and ffmpeg are tested against:

- A type-3 chunk that *starts* a message (OBS >= 30.2, ffmpeg when size and delta repeat)
  takes the previous message's length and type and adds the previous timestamp delta. (pyrtmp
  adds 0, which shortens a silent 48 kHz AAC stream by a third.)
- An extended timestamp (the 3-byte field is 0xFFFFFF) is read on every chunk of that chunk
  stream, type-3 continuations included, until a header with a small timestamp replaces it
  (OBS >= 30.1 and FFmpeg write it there).
- Set Chunk Size applies from the next chunk; Abort drops a partial message; aggregate messages
  (type 22) are split into their sub-messages with their own timestamps.

`encode_message()` does the reverse for what we send (a type-0 chunk, then type-3 chunks).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MSG_ABORT",
    "MSG_ACK",
    "MSG_AGGREGATE",
    "MSG_AUDIO",
    "MSG_COMMAND_AMF0",
    "MSG_COMMAND_AMF3",
    "MSG_DATA_AMF0",
    "MSG_DATA_AMF3",
    "MSG_SET_CHUNK_SIZE",
    "MSG_SET_PEER_BANDWIDTH",
    "MSG_USER_CONTROL",
    "MSG_VIDEO",
    "MSG_WINDOW_ACK_SIZE",
    "ChunkReader",
    "Message",
    "ProtocolError",
    "encode_message",
]

MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2
MSG_ACK = 3
MSG_USER_CONTROL = 4
MSG_WINDOW_ACK_SIZE = 5
MSG_SET_PEER_BANDWIDTH = 6
MSG_AUDIO = 8
MSG_VIDEO = 9
MSG_DATA_AMF3 = 15
MSG_COMMAND_AMF3 = 17
MSG_DATA_AMF0 = 18
MSG_COMMAND_AMF0 = 20
MSG_AGGREGATE = 22

_EXTENDED = 0xFFFFFF
#: The largest chunk size we accept (the spec allows 2^31-1; nobody needs more than this).
MAX_CHUNK_SIZE = 1 << 24
#: The largest message we assemble (a 4K keyframe is well below).
MAX_MESSAGE_SIZE = 1 << 23
_MAX_CHUNK_STREAMS = 64


class ProtocolError(ValueError):
    """The peer broke the RTMP protocol; the connection cannot go on."""


@dataclass(frozen=True, slots=True)
class Message:
    """One RTMP message. `timestamp` is in milliseconds (32-bit, may wrap)."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    chunk_stream: int = 0


class _ChunkStream:
    __slots__ = ("delta", "extended", "length", "parts", "received", "stream_id", "timestamp", "ts_field", "type_id")

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        #: The last header's timestamp field (absolute for type 0, a delta otherwise).
        self.ts_field = 0
        self.extended = False
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.parts: list[bytes] = []
        self.received = 0


class ChunkReader:
    """Reassembles messages from chunks (see the module docstring)."""

    def __init__(self, chunk_size: int = 128, *, max_chunk_size: int = MAX_CHUNK_SIZE, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.chunk_size = chunk_size
        #: Limits (`--limit rtmp_chunk_size`, `rtmp_message_bytes`): a Set Chunk Size over the
        #: first, a message over the second, or unfinished messages holding more than twice the
        #: second (one per chunk stream) end the connection with a `ProtocolError`.
        self.max_chunk_size = max_chunk_size
        self.max_message_size = max_message_size
        self._pending = 0
        self._buf = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        #: Every byte fed so far (for Acknowledgements).
        self.bytes_received = 0

    def feed(self, data: bytes) -> list[Message]:
        self.bytes_received += len(data)
        self._buf += data
        out: list[Message] = []
        pos = 0
        buf = self._buf
        while True:
            used = self._chunk(buf, pos, out)
            if used == 0:
                break
            pos += used
        if pos:
            del self._buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _chunk(self, buf: bytearray, pos: int, out: list[Message]) -> int:
        """Parse one chunk at `pos`; the bytes it took, or 0 when it is not complete yet."""
        avail = len(buf) - pos
        if avail < 1:
            return 0
        b0 = buf[pos]
        fmt, csid = b0 >> 6, b0 & 0x3F
        i = pos + 1
        if csid == 0:
            if avail < 2:
                return 0
            csid = 64 + buf[i]
            i += 1
        elif csid == 1:
            if avail < 3:
                return 0
            csid = 64 + buf[i] + buf[i + 1] * 256
            i += 2
        header = (11, 7, 3, 0)[fmt]
        if len(buf) < i + header:
            return 0
        cs = self._streams.get(csid)
        if cs is None:
            if fmt != 0:
                # ffmpeg tolerates this from zeroed state; so do we (some encoders start with 1).
                pass
            if len(self._streams) >= _MAX_CHUNK_STREAMS:
                raise ProtocolError(f"more than {_MAX_CHUNK_STREAMS} chunk streams")
            cs = self._streams[csid] = _ChunkStream()
        if fmt < 3:
            ts_field = int.from_bytes(buf[i : i + 3], "big")
            if fmt < 2:
                length = int.from_bytes(buf[i + 3 : i + 6], "big")
                type_id = buf[i + 6]
            else:
                length, type_id = cs.length, cs.type_id
            stream_id = int.from_bytes(buf[i + 7 : i + 11], "little") if fmt == 0 else cs.stream_id
            extended = ts_field == _EXTENDED
        else:
            ts_field, length, type_id, stream_id, extended = cs.ts_field, cs.length, cs.type_id, cs.stream_id, cs.extended
        i += header
        if extended:
            if len(buf) < i + 4:
                return 0
            ts_value = int.from_bytes(buf[i : i + 4], "big")
            i += 4
        else:
            ts_value = ts_field
        starting = cs.received == 0
        if not starting and fmt < 3 and length != cs.length:
            # A new header mid-message with another length: the partial one is lost (ffmpeg).
            starting = True
            self._pending -= cs.received
            cs.parts.clear()
            cs.received = 0
        if starting and length > self.max_message_size:
            raise ProtocolError(f"message of {length} bytes is over the {self.max_message_size}-byte limit")
        size = min(self.chunk_size, length - cs.received) if length else 0
        if len(buf) < i + size:
            return 0
        # The chunk is complete: commit the header state.
        if fmt < 3:
            cs.ts_field, cs.extended = ts_field, extended
            cs.length, cs.type_id, cs.stream_id = length, type_id, stream_id
        if starting:
            if fmt == 0:
                cs.timestamp = ts_value
                cs.delta = ts_value
            elif fmt < 3:
                cs.delta = ts_value
                cs.timestamp = (cs.timestamp + ts_value) & 0xFFFFFFFF
            else:
                # A type-3 chunk starting a message: the previous delta again (rtmppkt.c).
                cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
        if size:
            cs.parts.append(bytes(buf[i : i + size]))
            cs.received += size
            self._pending += size
        if cs.received >= length:
            payload = b"".join(cs.parts) if len(cs.parts) != 1 else cs.parts[0]
            self._pending -= cs.received
            cs.parts = []
            cs.received = 0
            self._message(Message(type_id, stream_id, cs.timestamp, payload, csid), out)
        elif self._pending > 2 * self.max_message_size:
            raise ProtocolError(f"unfinished messages hold over {2 * self.max_message_size} bytes (over twice the message limit)")
        return i + size - pos

    def _message(self, msg: Message, out: list[Message]) -> None:
        t = msg.type_id
        if t == MSG_SET_CHUNK_SIZE:
            if len(msg.payload) < 4:
                raise ProtocolError("short Set Chunk Size")
            size = int.from_bytes(msg.payload[:4], "big") & 0x7FFFFFFF
            if not 1 <= size <= self.max_chunk_size:
                raise ProtocolError(f"chunk size {size} out of range (1 to {self.max_chunk_size})")
            self.chunk_size = size
        elif t == MSG_ABORT:
            if len(msg.payload) >= 4:
                cs = self._streams.get(int.from_bytes(msg.payload[:4], "big"))
                if cs is not None:
                    self._pending -= cs.received
                    cs.parts, cs.received = [], 0
        elif t == MSG_AGGREGATE:
            out.extend(split_aggregate(msg))
            return
        out.append(msg)


def split_aggregate(msg: Message) -> list[Message]:
    """An aggregate message's sub-messages (FLV tags), timestamps rebased on the message's."""
    data, pos, out = msg.payload, 0, []
    base: int | None = None
    while pos + 11 <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        end = pos + 11 + size
        if end > len(data):
            raise ProtocolError("truncated aggregate message")
        if base is None:
            base = ts
        stamp = (msg.timestamp + ts - base) & 0xFFFFFFFF
        out.append(Message(type_id, msg.stream_id, stamp, bytes(data[pos + 11 : end]), msg.chunk_stream))
        pos = end + 4  # and the previous-tag-size
    return out


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def encode_message(
    csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes, chunk_size: int
) -> bytes:
    """One message as a type-0 chunk and type-3 continuations (extended timestamps repeated)."""
    timestamp &= 0xFFFFFFFF
    extended = timestamp >= _EXTENDED
    ts_field = _EXTENDED if extended else timestamp
    ext = timestamp.to_bytes(4, "big") if extended else b""
    parts = [
        _basic_header(0, csid),
        ts_field.to_bytes(3, "big"),
        len(payload).to_bytes(3, "big"),
        bytes([type_id]),
        stream_id.to_bytes(4, "little"),
        ext,
        payload[:chunk_size],
    ]
    cont = _basic_header(3, csid) + ext
    for offset in range(chunk_size, len(payload), chunk_size):
        parts.append(cont)
        parts.append(payload[offset : offset + chunk_size])
    return b"".join(parts)
