"""AMF0 (Action Message Format 0): the encoding of RTMP commands and metadata. Sans-IO.

Every type a publisher may send is decoded, including the strict array, date and long string
that FFmpeg >= 7.1 puts in `connect` (`fourCcList`); AMF3 is not (no publisher we serve uses it).
Objects decode to `dict`, ECMA arrays to `dict`, strict arrays to `list`, null/undefined to
`None`, dates to `float` (ms since the epoch).
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["AmfError", "decode", "decode_all", "encode", "encode_all"]

_NUMBER, _BOOLEAN, _STRING, _OBJECT, _NULL, _UNDEFINED = 0x00, 0x01, 0x02, 0x03, 0x05, 0x06
_REFERENCE, _ECMA_ARRAY, _OBJECT_END, _STRICT_ARRAY, _DATE, _LONG_STRING = 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C
_UNSUPPORTED, _XML, _TYPED_OBJECT, _AVMPLUS = 0x0D, 0x0F, 0x10, 0x11
_MAX_DEPTH = 32


class AmfError(ValueError):
    """Malformed or unsupported AMF0 data."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError(f"truncated AMF0 value at byte {self.pos} (needs {n} more)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def utf8(self, n: int) -> str:
        return self.take(n).decode("utf-8", "replace")


def _value(r: _Reader, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise AmfError("AMF0 nesting too deep")
    marker = r.u8()
    if marker == _NUMBER:
        return struct.unpack(">d", r.take(8))[0]
    if marker == _BOOLEAN:
        return r.u8() != 0
    if marker == _STRING:
        return r.utf8(r.u16())
    if marker == _LONG_STRING or marker == _XML:
        return r.utf8(r.u32())
    if marker in (_NULL, _UNDEFINED, _UNSUPPORTED):
        return None
    if marker == _OBJECT:
        return _properties(r, depth)
    if marker == _TYPED_OBJECT:
        r.utf8(r.u16())  # class name
        return _properties(r, depth)
    if marker == _ECMA_ARRAY:
        r.u32()  # a count hint; the entries end with an object end like an object's
        return _properties(r, depth)
    if marker == _STRICT_ARRAY:
        count = r.u32()
        if count > len(r.data) - r.pos:  # each value takes at least one byte
            raise AmfError(f"AMF0 strict array of {count} items in {len(r.data) - r.pos} bytes")
        return [_value(r, depth + 1) for _ in range(count)]
    if marker == _DATE:
        ms = struct.unpack(">d", r.take(8))[0]
        r.take(2)  # time zone, unused
        return ms
    if marker == _REFERENCE:
        return r.u16()
    raise AmfError(f"unsupported AMF0 type 0x{marker:02x} at byte {r.pos - 1}")


def _properties(r: _Reader, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while True:
        key = r.utf8(r.u16())
        if not key and r.pos < len(r.data) and r.data[r.pos] == _OBJECT_END:
            r.pos += 1
            return out
        if r.pos >= len(r.data):
            return out  # some encoders omit the end marker of the last object
        out[key] = _value(r, depth + 1)


def decode(data: bytes, pos: int = 0) -> tuple[Any, int]:
    """One value from `data[pos:]`; returns it and the position after it."""
    r = _Reader(data)
    r.pos = pos
    return _value(r, 0), r.pos


def decode_all(data: bytes) -> list[Any]:
    """Every value in `data` (a command message: name, transaction id, arguments...)."""
    r = _Reader(data)
    values = []
    while r.pos < len(r.data):
        values.append(_value(r, 0))
    return values


def _key(key: str) -> bytes:
    raw = key.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode(value: Any) -> bytes:
    if value is None:
        return bytes([_NULL])
    if isinstance(value, bool):
        return bytes([_BOOLEAN, 1 if value else 0])
    if isinstance(value, (int, float)):
        return bytes([_NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return bytes([_LONG_STRING]) + len(raw).to_bytes(4, "big") + raw
        return bytes([_STRING]) + len(raw).to_bytes(2, "big") + raw
    if isinstance(value, EcmaArray):
        body = b"".join(_key(k) + encode(v) for k, v in value.items())
        return bytes([_ECMA_ARRAY]) + len(value).to_bytes(4, "big") + body + b"\x00\x00" + bytes([_OBJECT_END])
    if isinstance(value, dict):
        body = b"".join(_key(k) + encode(v) for k, v in value.items())
        return bytes([_OBJECT]) + body + b"\x00\x00" + bytes([_OBJECT_END])
    if isinstance(value, (list, tuple)):
        return bytes([_STRICT_ARRAY]) + len(value).to_bytes(4, "big") + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode_all(*values: Any) -> bytes:
    return b"".join(encode(v) for v in values)


class EcmaArray(dict[str, Any]):
    """A dict encoded as an AMF0 ECMA array (what `onMetaData` uses)."""
