"""RTMP connections as sans-IO state machines: bytes in, events out, bytes to send.

    conn = ServerConnection()
    for event in conn.feed(data):          # raises ProtocolError on bad input
        ...                                # Connected, PublishRequested, Media, Metadata, Unpublished
    writer.write(conn.data_to_send())

Server side (what OBS and ffmpeg need, from the findings): the simple handshake (C0 version 3,
S2 echoes C1; OBS uses the digest handshake only with SWF verification and only warns on a
mismatch), then `connect` -> Window Ack Size, Set Peer Bandwidth, Set Chunk Size 4096 and
`_result`; `releaseStream`/`FCPublish` -> nothing; `createStream` -> `_result` with stream id 1;
`publish(key, "live")` -> a `PublishRequested` event: the application answers with
`accept_publish()` (Stream Begin + `onStatus NetStream.Publish.Start`, which OBS blocks on) or
`reject_publish()` (an error `onStatus`, never Publish.Start, then close: OBS would otherwise
reconnect in a loop). Acknowledgements go out every window; pings are answered.

Client side (`ClientConnection`, used by the RTMP push): the same handshake from the other end,
`connect`, `releaseStream`, `FCPublish`, `createStream`, `publish`, then media messages.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import amf0
from .chunks import (
    MSG_ACK,
    MSG_AUDIO,
    MSG_COMMAND_AMF0,
    MSG_COMMAND_AMF3,
    MSG_DATA_AMF0,
    MSG_DATA_AMF3,
    MSG_SET_CHUNK_SIZE,
    MSG_SET_PEER_BANDWIDTH,
    MSG_USER_CONTROL,
    MSG_VIDEO,
    MSG_WINDOW_ACK_SIZE,
    ChunkReader,
    Message,
    ProtocolError,
    encode_message,
)

__all__ = [
    "ClientConnection",
    "Connected",
    "Media",
    "Metadata",
    "ProtocolError",
    "PublishRequested",
    "PublishStarted",
    "ServerConnection",
    "Unpublished",
]

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3
OUT_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 2_500_000
_CSID_CONTROL, _CSID_COMMAND, _CSID_AUDIO, _CSID_VIDEO, _CSID_DATA = 2, 3, 4, 6, 5
_UC_STREAM_BEGIN, _UC_STREAM_EOF, _UC_PING_REQUEST, _UC_PING_RESPONSE = 0, 1, 6, 7


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    app: str
    tc_url: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishRequested:
    #: The publish name as sent (the stream key; may carry "?args").
    name: str
    app: str
    tc_url: str
    kind: str


@dataclass(frozen=True, slots=True)
class PublishStarted:
    """Client side: the server answered NetStream.Publish.Start."""


@dataclass(frozen=True, slots=True)
class Media:
    """An audio or video message of the publishing stream; `payload` is an FLV tag body."""

    kind: str  # "audio" | "video"
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Metadata:
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Unpublished:
    """The publisher said it is done (FCUnpublish, deleteStream, closeStream)."""


def _control(type_id: int, payload: bytes) -> bytes:
    return encode_message(_CSID_CONTROL, type_id, 0, 0, payload, OUT_CHUNK_SIZE)


class _Connection:
    def __init__(self, reader: ChunkReader | None = None) -> None:
        self._reader = reader or ChunkReader()
        self._out: list[bytes] = []
        self._handshake_buf = bytearray()
        self.handshake_done = False
        self.out_chunk_size = 128
        self._ack_window = WINDOW_ACK_SIZE
        self._acked = 0
        self.closed_reason: str | None = None

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    @property
    def bytes_received(self) -> int:
        return self._reader.bytes_received + (1 + 2 * HANDSHAKE_SIZE if self.handshake_done else 0)

    def _send(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        self._out.append(encode_message(csid, type_id, stream_id, timestamp, payload, self.out_chunk_size))

    def _command(self, stream_id: int, *values: Any) -> None:
        self._send(_CSID_COMMAND, MSG_COMMAND_AMF0, stream_id, 0, amf0.encode_all(*values))

    def _set_chunk_size(self, size: int) -> None:
        self._out.append(_control(MSG_SET_CHUNK_SIZE, size.to_bytes(4, "big")))
        self.out_chunk_size = size

    def _messages(self, data: bytes) -> list[Message]:
        messages = self._reader.feed(data)
        received = self._reader.bytes_received
        if received - self._acked >= self._ack_window:
            self._acked = received
            self._out.append(_control(MSG_ACK, (received & 0xFFFFFFFF).to_bytes(4, "big")))
        return messages

    def _protocol_message(self, msg: Message) -> bool:
        """Handle a control message; True when it was one."""
        t = msg.type_id
        if t == MSG_WINDOW_ACK_SIZE and len(msg.payload) >= 4:
            self._ack_window = max(1, int.from_bytes(msg.payload[:4], "big"))
            return True
        if t == MSG_USER_CONTROL and len(msg.payload) >= 2:
            event = int.from_bytes(msg.payload[:2], "big")
            if event == _UC_PING_REQUEST:
                self._out.append(_control(MSG_USER_CONTROL, _UC_PING_RESPONSE.to_bytes(2, "big") + msg.payload[2:6]))
            return True
        return t in (MSG_SET_CHUNK_SIZE, MSG_ACK, MSG_SET_PEER_BANDWIDTH, MSG_USER_CONTROL, MSG_WINDOW_ACK_SIZE, 2)

    @staticmethod
    def _decode_command(msg: Message) -> list[Any]:
        payload = msg.payload
        if msg.type_id in (MSG_COMMAND_AMF3, MSG_DATA_AMF3) and payload[:1] == b"\x00":
            payload = payload[1:]  # AMF3 messages that carry AMF0 values
        try:
            return amf0.decode_all(payload)
        except amf0.AmfError as exc:
            raise ProtocolError(f"bad AMF0 in message type {msg.type_id}: {exc}") from None


class ServerConnection(_Connection):
    """One publisher's connection, server side (see the module docstring)."""

    def __init__(self, *, now: float | None = None, reader: ChunkReader | None = None) -> None:
        """`reader`: a `ChunkReader` with the server's limits (default: the module's)."""
        super().__init__(reader)
        self._epoch = time.time() if now is None else now
        self.app = ""
        self.tc_url = ""
        self.stream_id = 0
        self.publishing = False
        self.publish_name: str | None = None
        self._publish_txn = 0.0

    def feed(self, data: bytes) -> list[Any]:
        if not self.handshake_done:
            data = self._handshake(data)
            if not self.handshake_done:
                return []
        events: list[Any] = []
        for msg in self._messages(data):
            self._on_message(msg, events)
        return events

    def _handshake(self, data: bytes) -> bytes:
        buf = self._handshake_buf
        had = len(buf)
        buf += data
        if had < 1 + HANDSHAKE_SIZE <= len(buf):
            if buf[0] != RTMP_VERSION:
                raise ProtocolError(f"not an RTMP handshake (version byte {buf[0]}, expected 3; RTMPE is not supported)")
            c1 = bytes(buf[1 : 1 + HANDSHAKE_SIZE])
            s1 = int(time.time() - self._epoch).to_bytes(4, "big") + b"\x00" * 4 + os.urandom(HANDSHAKE_SIZE - 8)
            self._out.append(bytes([RTMP_VERSION]) + s1 + c1)  # S0 S1 S2 (S2 echoes C1)
        elif len(buf) >= 1 and buf[0] != RTMP_VERSION:
            raise ProtocolError(f"not an RTMP handshake (version byte {buf[0]}, expected 3)")
        total = 1 + 2 * HANDSHAKE_SIZE
        if len(buf) < total:
            return b""
        self.handshake_done = True
        rest = bytes(buf[total:])
        self._handshake_buf = bytearray()
        return rest

    def _on_message(self, msg: Message, events: list[Any]) -> None:
        t = msg.type_id
        if t in (MSG_AUDIO, MSG_VIDEO):
            # From the publish command on: a client may send its first tags before our answer,
            # and the application decides on the publish before it looks at the next events.
            if self.publish_name is not None and msg.payload:
                events.append(Media("audio" if t == MSG_AUDIO else "video", msg.timestamp, msg.payload))
            return
        if t in (MSG_DATA_AMF0, MSG_DATA_AMF3):
            values = self._decode_command(msg)
            if values and values[0] == "@setDataFrame":
                values = values[1:]
            if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
                events.append(Metadata(values[1]))
            return
        if t in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
            self._on_command(msg, self._decode_command(msg), events)
            return
        self._protocol_message(msg)

    def _on_command(self, msg: Message, values: list[Any], events: list[Any]) -> None:
        if not values or not isinstance(values[0], str):
            raise ProtocolError("command message without a name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[3:]
        if name == "connect":
            obj = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            self.app = str(obj.get("app", "") or "")
            self.tc_url = str(obj.get("tcUrl", "") or "")
            self._out.append(_control(MSG_WINDOW_ACK_SIZE, WINDOW_ACK_SIZE.to_bytes(4, "big")))
            self._out.append(_control(MSG_SET_PEER_BANDWIDTH, WINDOW_ACK_SIZE.to_bytes(4, "big") + b"\x02"))
            self._set_chunk_size(OUT_CHUNK_SIZE)
            self._command(
                0,
                "_result",
                txn,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0.0,
                },
            )
            events.append(Connected(self.app, self.tc_url, obj))
        elif name == "createStream":
            self.stream_id = 1
            self._command(0, "_result", txn, None, float(self.stream_id))
        elif name == "publish":
            if self.publish_name is not None:
                raise ProtocolError("a second publish on one connection")
            key = str(args[0]) if args and args[0] is not None else ""
            kind = str(args[1]) if len(args) > 1 and args[1] is not None else "live"
            self.publish_name = key
            self._publish_stream = msg.stream_id or self.stream_id or 1
            self._publish_txn = txn
            events.append(PublishRequested(key, self.app, self.tc_url, kind))
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.publishing:
                self.publishing = False
                events.append(Unpublished())
        elif name in ("releaseStream", "FCPublish", "getStreamLength", "_checkbw", "FCSubscribe"):
            pass  # OBS and ffmpeg need no answer
        elif name == "play":
            self._status(msg.stream_id, "error", "NetStream.Play.Failed", "This server only accepts publishing.")
        # Anything else is ignored, as servers do for commands they do not know.

    def _status(self, stream_id: int, level: str, code: str, description: str) -> None:
        self._send(
            _CSID_DATA,
            MSG_COMMAND_AMF0,
            stream_id,
            0,
            amf0.encode_all("onStatus", 0.0, None, {"level": level, "code": code, "description": description}),
        )

    def accept_publish(self) -> None:
        stream = getattr(self, "_publish_stream", 1)
        self._out.append(_control(MSG_USER_CONTROL, _UC_STREAM_BEGIN.to_bytes(2, "big") + stream.to_bytes(4, "big")))
        self._status(stream, "status", "NetStream.Publish.Start", f"{self.publish_name} is now published.")
        self.publishing = True

    def reject_publish(self, code: str, description: str) -> None:
        """An error status (never Publish.Start); the caller then closes the connection."""
        self._status(getattr(self, "_publish_stream", 1), "error", code, description)

    def end_stream(self) -> None:
        """The server ends the publish (session stopped): Unpublish status and Stream EOF."""
        stream = getattr(self, "_publish_stream", 1)
        self._status(stream, "status", "NetStream.Unpublish.Success", "The stream was stopped by the server.")
        self._out.append(_control(MSG_USER_CONTROL, _UC_STREAM_EOF.to_bytes(2, "big") + stream.to_bytes(4, "big")))
        self.publishing = False


# --- client (push) --------------------------------------------------------------------------


def split_rtmp_url(url: str) -> tuple[str, int, str, str, str]:
    """`rtmp://host[:port]/app[/...]/name` -> (host, port, app, name, tcUrl). The last path
    segment is the stream name (key), everything before it the app, as ffmpeg splits."""
    parts = urlsplit(url)
    if parts.scheme != "rtmp" or not parts.hostname:
        raise ValueError(f"not an rtmp:// URL: {url!r}")
    path = parts.path.lstrip("/")
    app, _, name = path.rpartition("/")
    if not app or not name:
        raise ValueError(f"an RTMP push URL needs rtmp://host/app/stream_key, got {url!r}")
    if parts.query:
        name = f"{name}?{parts.query}"
    port = parts.port or 1935
    tc_url = f"rtmp://{parts.hostname}:{port}/{app}"
    return parts.hostname, port, app, name, tc_url


class ClientConnection(_Connection):
    """The publishing side of one RTMP connection (sans-IO)."""

    def __init__(self, app: str, name: str, tc_url: str) -> None:
        super().__init__()
        self.app, self.name, self.tc_url = app, name, tc_url
        self.stream_id = 0
        self.published = False
        self._state = "handshake"
        c1 = b"\x00" * 8 + os.urandom(HANDSHAKE_SIZE - 8)
        self._out.append(bytes([RTMP_VERSION]) + c1)

    def feed(self, data: bytes) -> list[Any]:
        if not self.handshake_done:
            buf = self._handshake_buf
            buf += data
            if len(buf) < 1 + 2 * HANDSHAKE_SIZE:
                return []
            if buf[0] != RTMP_VERSION:
                raise ProtocolError(f"server answered RTMP version {buf[0]}")
            s1 = bytes(buf[1 : 1 + HANDSHAKE_SIZE])
            data = bytes(buf[1 + 2 * HANDSHAKE_SIZE :])
            self._handshake_buf = bytearray()
            self.handshake_done = True
            self._out.append(s1)  # C2 echoes S1
            self._set_chunk_size(OUT_CHUNK_SIZE)
            self._command(
                0,
                "connect",
                1.0,
                {
                    "app": self.app,
                    "type": "nonprivate",
                    "flashVer": "FMLE/3.0 (compatible; livestream)",
                    "tcUrl": self.tc_url,
                },
            )
            self._state = "connect"
        events: list[Any] = []
        for msg in self._messages(data):
            if msg.type_id in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
                self._on_command(self._decode_command(msg), events)
            else:
                self._protocol_message(msg)
        return events

    def _on_command(self, values: list[Any], events: list[Any]) -> None:
        if not values:
            return
        name = values[0]
        txn = values[1] if len(values) > 1 else 0.0
        if name == "_error" or (name == "onStatus" and _level(values) == "error"):
            info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
            raise ProtocolError(f"server refused: {info.get('code', name)} {info.get('description', '')}".strip())
        if name == "_result" and txn == 1.0 and self._state == "connect":
            self._command(0, "releaseStream", 2.0, None, self.name)
            self._command(0, "FCPublish", 3.0, None, self.name)
            self._command(0, "createStream", 4.0, None)
            self._state = "createStream"
        elif name == "_result" and txn == 4.0 and self._state == "createStream":
            self.stream_id = int(values[3]) if len(values) > 3 and isinstance(values[3], float) else 1
            self._send(_CSID_DATA, MSG_COMMAND_AMF0, self.stream_id, 0, amf0.encode_all("publish", 5.0, None, self.name, "live"))
            self._state = "publish"
        elif name == "onStatus" and self._state == "publish":
            info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
            if info.get("code") == "NetStream.Publish.Start":
                self._state = "publishing"
                self.published = True
                events.append(PublishStarted())

    def send_metadata(self, values: dict[str, Any]) -> None:
        payload = amf0.encode_all("@setDataFrame", "onMetaData", amf0.EcmaArray(values))
        self._send(_CSID_DATA, MSG_DATA_AMF0, self.stream_id, 0, payload)

    def send_media(self, kind: str, timestamp: int, payload: bytes) -> None:
        if kind == "video":
            self._send(_CSID_VIDEO, MSG_VIDEO, self.stream_id, timestamp, payload)
        else:
            self._send(_CSID_AUDIO, MSG_AUDIO, self.stream_id, timestamp, payload)

    def unpublish(self) -> None:
        self._command(0, "FCUnpublish", 6.0, None, self.name)
        self._command(0, "deleteStream", 7.0, None, float(self.stream_id))


def _level(values: list[Any]) -> str:
    info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
    return str(info.get("level", ""))
