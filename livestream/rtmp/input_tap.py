"""The publisher's own encoded stream as `EncodedPacket`s, for sinks that want the input as sent
(recording the input, `livestream.egress.recording`): no decode, no encode.

    tap = InputTap("cam")             # one per RTMP ingest (`RtmpIngest.input_sinks` is tap.sinks)
    tap.put(tag, timestamp_ms)        # every FLV tag, on the connection's loop
    tap.sinks.attach(sink)            # a QueuedSink; it starts at the publisher's next keyframe
    tap.end()                         # the publisher is gone: the sinks drain and end

H.264 (AVCC in FLV) becomes Annex B with the SPS/PPS of the last sequence header in front of
every keyframe, timed on the 90 kHz clock (pts = dts + composition time); AAC frames keep their
AudioSpecificConfig. Other video codecs (HEVC, AV1 over Enhanced RTMP) are not tapped.
Configurations are tracked for every tag; packets are built only while a sink is attached.
"""

from __future__ import annotations

import logging

from ..egress import SinkFanout
from ..media.audio_frames import aac_config_info
from ..media.packets import OUTPUT_TIME_BASE, EncodedPacket
from .flv import CODED_FRAMES, SEQUENCE_START, AudioTag, FlvError, VideoTag

__all__ = ["InputTap", "avc_parameter_sets"]

log = logging.getLogger(__name__)

_START = b"\x00\x00\x00\x01"


def avc_parameter_sets(record: bytes) -> tuple[int, bytes]:
    """An AVCDecoderConfigurationRecord's NAL length size and its SPS/PPS as Annex B."""
    if len(record) < 7 or record[0] != 1:
        raise FlvError("bad AVC configuration record")
    length_size = (record[4] & 0x03) + 1
    nals: list[bytes] = []
    i = 5
    for mask in (0x1F, 0xFF):  # the SPS list (count in 5 bits), then the PPS list
        if i >= len(record):
            raise FlvError("truncated AVC configuration record")
        count, i = record[i] & mask, i + 1
        for _ in range(count):
            size = int.from_bytes(record[i : i + 2], "big")
            nal = record[i + 2 : i + 2 + size]
            if len(nal) != size or not size:
                raise FlvError("truncated AVC configuration record")
            nals.append(_START + nal)
            i += 2 + size
    return length_size, b"".join(nals)


def _annexb(data: bytes, length_size: int) -> bytes:
    """Length-prefixed NAL units (AVCC) as Annex B."""
    out, i, n = [], 0, len(data)
    while i + length_size <= n:
        size = int.from_bytes(data[i : i + length_size], "big")
        i += length_size
        if size == 0 or i + size > n:
            break
        out.append(_START + data[i : i + size])
        i += size
    return b"".join(out)


class InputTap:
    """See the module docstring. Loop only (the RTMP connection's task)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.sinks = SinkFanout(lambda message: log.warning("rtmp input of %s: %s", stream, message))
        self._avc: tuple[int, bytes] | None = None
        self._asc: bytes | None = None
        self._rate, self._channels = 48000, 2
        self.packets = 0

    def put(self, tag: VideoTag | AudioTag, ts: int) -> None:
        if isinstance(tag, VideoTag):
            packet = self._video(tag, ts)
        else:
            packet = self._audio(tag, ts)
        if packet is not None and self.sinks:
            self.packets += 1
            self.sinks.put(packet)

    def end(self) -> None:
        self.sinks.end()

    def _video(self, tag: VideoTag, ts: int) -> EncodedPacket | None:
        if tag.codec != "h264":
            return None
        if tag.kind == SEQUENCE_START:
            try:
                self._avc = avc_parameter_sets(tag.data)
            except FlvError as exc:
                log.warning("rtmp input of %s: %s; the input is not tapped until the next one", self.stream, exc)
                self._avc = None
            return None
        if tag.kind != CODED_FRAMES or self._avc is None or not self.sinks:
            return None
        length_size, parameter_sets = self._avc
        data = _annexb(tag.data, length_size)
        if not data:
            return None
        if tag.keyframe:
            data = parameter_sets + data
        return EncodedPacket(
            "video", "h264", data, (ts + tag.cts) * 90, ts * 90, OUTPUT_TIME_BASE, keyframe=tag.keyframe
        )

    def _audio(self, tag: AudioTag, ts: int) -> EncodedPacket | None:
        if tag.config:
            self._asc = tag.data
            rate, channels = aac_config_info(tag.data)
            self._rate, self._channels = rate or 48000, channels or 2
            return None
        if self._asc is None or not tag.data or not self.sinks:
            return None
        return EncodedPacket(
            "audio",
            "aac",
            tag.data,
            ts * 90,
            ts * 90,
            OUTPUT_TIME_BASE,
            sample_rate=self._rate,
            channels=self._channels,
            extradata=self._asc,
            duration=round(1024 * 90000 / self._rate),
        )
