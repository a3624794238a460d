"""Audio frame headers: how long a copied frame lasts, and ADTS framing for raw AAC.

MPEG-TS carries AAC as ADTS frames and MP2/MP3/AC-3 with their own frame headers. An encoder
(ffmpeg's mpegts muxer, go-livepeer's segmenter) packs several frames into one PES with a
timestamp only on the first; a demuxer opened without probing knows no sample rate, so it
cannot time the others. Each frame's header says its sample count and rate: that is enough to
time every frame from the PES's first timestamp without decoding anything.
"""

from __future__ import annotations

__all__ = ["AAC_RATES", "aac_config", "aac_config_info", "adts_header", "adts_to_raw", "frame_samples", "opus_ts_packets"]

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_AC3_RATES = (48000, 44100, 32000)


def _adts(data: bytes) -> tuple[int, int] | None:
    if len(data) < 7 or data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
        return None
    index = (data[2] >> 2) & 0x0F
    if index >= len(AAC_RATES):
        return None
    return 1024 * ((data[6] & 0x03) + 1), AAC_RATES[index]


def _mpeg_audio(data: bytes) -> tuple[int, int] | None:
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return None
    version, layer, index = (data[1] >> 3) & 3, (data[1] >> 1) & 3, (data[2] >> 2) & 3
    if version == 1 or layer == 0 or index == 3:
        return None
    rate = _MPEG_RATES[version][index]
    if layer == 3:  # Layer I
        return 384, rate
    if layer == 2 or version == 3:  # Layer II, or Layer III of MPEG-1
        return 1152, rate
    return 576, rate  # Layer III of MPEG-2 and 2.5


def _ac3(data: bytes, *, enhanced: bool) -> tuple[int, int] | None:
    if len(data) < 6 or data[0] != 0x0B or data[1] != 0x77:
        return None
    fscod = data[4] >> 6
    if not enhanced:
        return (1536, _AC3_RATES[fscod]) if fscod < 3 else None
    blocks = (1, 2, 3, 6)[(data[4] >> 4) & 3]
    if fscod == 3:  # reduced rates: fscod2, always six blocks
        fscod2 = (data[4] >> 4) & 3
        return (1536, _AC3_RATES[fscod2] // 2) if fscod2 < 3 else None
    return 256 * blocks, _AC3_RATES[fscod]


def frame_samples(codec: str, data: bytes) -> tuple[int, int] | None:
    """(samples, sample rate) of one encoded audio frame from its header; None when the bytes
    are not a frame of `codec` this module knows."""
    if codec == "aac":
        return _adts(data)
    if codec in ("mp2", "mp3"):
        return _mpeg_audio(data)
    if codec in ("ac3", "eac3"):
        return _ac3(data, enhanced=codec == "eac3")
    return None


def aac_config_info(asc: bytes) -> tuple[int, int]:
    """Sample rate and channels from an AudioSpecificConfig (0s when it cannot tell)."""
    if len(asc) < 2:
        return 0, 0
    bits = int.from_bytes(asc[:2], "big")
    index, channels = (bits >> 7) & 0x0F, (bits >> 3) & 0x0F
    rate = AAC_RATES[index] if index < len(AAC_RATES) else 0
    if index == 15 and len(asc) >= 5:
        rate = (int.from_bytes(asc[1:5], "big") >> 7) & 0xFFFFFF
    return rate, channels


def aac_config(header: bytes) -> bytes:
    """The AudioSpecificConfig an ADTS header describes."""
    profile = (header[2] >> 6) + 1
    index = (header[2] >> 2) & 0x0F
    channels = ((header[2] & 1) << 2) | (header[3] >> 6)
    return ((profile << 11) | (index << 7) | (channels << 3)).to_bytes(2, "big")


def adts_to_raw(frame: bytes) -> tuple[bytes, bytes]:
    """An ADTS frame's raw AAC data and the AudioSpecificConfig its header describes."""
    if len(frame) < 7 or frame[0] != 0xFF or frame[1] & 0xF0 != 0xF0:
        raise ValueError("not an ADTS frame")
    header = 7 if frame[1] & 1 else 9
    return frame[header:], aac_config(frame)


def adts_header(asc: bytes, payload_size: int) -> bytes:
    """The 7-byte ADTS header for one raw AAC frame of `payload_size` bytes (MPEG-4, no CRC)."""
    bits = int.from_bytes(asc[:2], "big")
    profile = max(0, min(3, (bits >> 11) - 1))
    index, channels = (bits >> 7) & 0x0F, (bits >> 3) & 0x0F
    size = payload_size + 7
    return bytes(
        (
            0xFF,
            0xF1,
            (profile << 6) | (index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (size >> 11),
            (size >> 3) & 0xFF,
            ((size & 7) << 5) | 0x1F,
            0xFC,
        )
    )


def opus_ts_packets(payload: bytes) -> list[tuple[bytes, int, int]]:
    """Opus packets of an MPEG-TS PES, each behind its `opus_control_header` (ETSI TS 102 366):
    each (packet, start trim, end trim), the trims in samples at 48 kHz."""
    out = []
    i, n = 0, len(payload)
    while i + 2 <= n and payload[i] == 0x7F and payload[i + 1] & 0xE0 == 0xE0:
        flags = payload[i + 1]
        i += 2
        size = 0
        while i < n:
            byte = payload[i]
            i += 1
            size += byte
            if byte != 0xFF:
                break
        start_trim = end_trim = 0
        if flags & 0x10:
            start_trim = int.from_bytes(payload[i : i + 2], "big") & 0x1FFF
            i += 2
        if flags & 0x08:
            end_trim = int.from_bytes(payload[i : i + 2], "big") & 0x1FFF
            i += 2
        if flags & 0x04:  # control extension: its length, then that many bytes
            i += 1 + (payload[i] if i < n else 0)
        out.append((payload[i : i + size], start_trim, end_trim))
        i += size
    return out
