"""FLV tag payloads, as RTMP audio (8) and video (9) messages carry them. Sans-IO.

Parsing (ingest): legacy H.264 (codec id 7), HEVC with the non-standard codec id 12 some
encoders use, and Enhanced RTMP video (byte 0 = 0x80 | frame type << 4 | packet type, then a
FourCC: `avc1`, `hvc1`, `av01`), the way OBS >= 29.1 sends HEVC and AV1; AAC audio.
Multitrack packets (OBS >= 30.2, for tracks above 0) are skipped.

Building (push): H.264 from Annex B access units (the session encoder's output) and AAC from
raw frames plus AudioSpecificConfig, or from ADTS frames.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AudioTag",
    "FlvError",
    "VideoTag",
    "aac_tag",
    "annexb_nals",
    "avc_config",
    "avc_tag",
    "parse_audio",
    "parse_video",
]

# Video packet kinds (legacy AVCPacketType and Enhanced RTMP PacketType share 0..2).
SEQUENCE_START, CODED_FRAMES, SEQUENCE_END, CODED_FRAMES_X, METADATA, MPEG2TS_SEQUENCE_START, MULTITRACK = range(7)

_FOURCC = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}
_LEGACY_VIDEO = {7: "h264", 12: "hevc"}
_LEGACY_VIDEO_NAMES = {1: "JPEG", 2: "Sorenson H.263", 3: "Screen video", 4: "VP6", 5: "VP6 alpha", 6: "Screen video 2"}
_AUDIO_NAMES = {
    0: "PCM",
    1: "ADPCM",
    2: "MP3",
    3: "PCM LE",
    4: "Nellymoser 16k",
    5: "Nellymoser 8k",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    9: "Enhanced audio (ExHeader)",
    11: "Speex",
    14: "MP3 8k",
}


class FlvError(ValueError):
    """A tag we cannot use: unsupported codec or malformed payload."""


@dataclass(frozen=True, slots=True)
class VideoTag:
    codec: str
    #: SEQUENCE_START (config record in `data`), CODED_FRAMES, SEQUENCE_END, or METADATA.
    kind: int
    keyframe: bool
    #: Composition time offset (pts - dts) in ms.
    cts: int
    data: bytes


@dataclass(frozen=True, slots=True)
class AudioTag:
    codec: str
    #: True: `data` is the AudioSpecificConfig; False: a raw frame.
    config: bool
    data: bytes


def _si24(b: bytes) -> int:
    v = int.from_bytes(b, "big")
    return v - (1 << 24) if v & 0x800000 else v


def parse_video(payload: bytes) -> VideoTag | None:
    """A video message's payload; None for what carries no picture (info frames, multitrack)."""
    if len(payload) < 1:
        raise FlvError("empty video tag")
    b0 = payload[0]
    if b0 & 0x80:  # Enhanced RTMP
        frame_type, packet_type = (b0 >> 4) & 0x07, b0 & 0x0F
        if packet_type == MULTITRACK:
            return None
        if len(payload) < 5:
            raise FlvError("truncated Enhanced RTMP video header")
        fourcc = bytes(payload[1:5])
        codec = _FOURCC.get(fourcc)
        if codec is None:
            raise FlvError(f"unsupported video codec {fourcc.decode('latin-1')!r} (Enhanced RTMP)")
        if frame_type == 5 or packet_type == METADATA:
            return None
        key = frame_type == 1
        if packet_type == CODED_FRAMES and codec in ("h264", "hevc"):
            if len(payload) < 8:
                raise FlvError("truncated Enhanced RTMP coded frame")
            return VideoTag(codec, CODED_FRAMES, key, _si24(payload[5:8]), payload[8:])
        if packet_type in (CODED_FRAMES, CODED_FRAMES_X):
            return VideoTag(codec, CODED_FRAMES, key, 0, payload[5:])
        if packet_type in (SEQUENCE_START, SEQUENCE_END):
            return VideoTag(codec, packet_type, key, 0, payload[5:])
        return None
    frame_type, codec_id = b0 >> 4, b0 & 0x0F
    codec = _LEGACY_VIDEO.get(codec_id)
    if codec is None:
        name = _LEGACY_VIDEO_NAMES.get(codec_id, f"codec id {codec_id}")
        raise FlvError(f"unsupported video codec {name}: publish H.264 (or HEVC/AV1 as Enhanced RTMP)")
    if frame_type == 5:  # video info/command frame
        return None
    if len(payload) < 5:
        raise FlvError("truncated AVC video tag")
    kind = payload[1]
    if kind > SEQUENCE_END:
        raise FlvError(f"bad AVC packet type {kind}")
    return VideoTag(codec, kind, frame_type == 1, _si24(payload[2:5]), payload[5:])


def parse_audio(payload: bytes) -> AudioTag | None:
    """An audio message's payload; raises `FlvError` for codecs other than AAC."""
    if len(payload) < 1:
        return None
    fmt = payload[0] >> 4
    if fmt != 10:
        raise FlvError(f"unsupported audio codec {_AUDIO_NAMES.get(fmt, f'id {fmt}')}: publish AAC")
    if len(payload) < 2:
        raise FlvError("truncated AAC audio tag")
    return AudioTag("aac", payload[1] == 0, payload[2:])


# --- building (push) ------------------------------------------------------------------------


def annexb_nals(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte string (3- or 4-byte start codes)."""
    nals: list[bytes] = []
    n = len(data)
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < n:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = n if j < 0 else j
        nal = data[start:end]
        if j >= 0 and nal.endswith(b"\x00"):
            nal = nal[:-1]  # the leading zero of a 4-byte start code
        if nal:
            nals.append(nal)
        i = j
    return nals


def avc_config(sps: bytes, pps: bytes) -> bytes:
    """An AVCDecoderConfigurationRecord (ISO 14496-15) for one SPS and one PPS."""
    if len(sps) < 4:
        raise FlvError("SPS too short")
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )


def avc_tag(keyframe: bool, kind: int, cts: int, data: bytes) -> bytes:
    """A legacy H.264 video tag payload."""
    return bytes([(0x10 if keyframe else 0x20) | 7, kind]) + (cts & 0xFFFFFF).to_bytes(3, "big") + data


def avcc_from_nals(nals: list[bytes]) -> bytes:
    return b"".join(len(nal).to_bytes(4, "big") + nal for nal in nals)


def aac_tag(config: bool, data: bytes) -> bytes:
    """An AAC audio tag payload (the header byte says 44 kHz stereo 16-bit, as FLV requires)."""
    return bytes([0xAF, 0 if config else 1]) + data
