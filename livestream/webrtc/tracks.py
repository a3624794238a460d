"""Media tracks for WebRTC playback: one shared H.264 encode fanned out to every viewer.

    encoder thread ──packets──▶ PacketFanout ──▶ PacketTrack (viewer 1) ──▶ aiortc H264Encoder.pack()
                        ▲            │     ──▶ PacketTrack (viewer 2) ──▶ ...
                        │            │     ──▶ DecodingTrack(PacketTrack) ──▶ aiortc VP8 (fallback)
        request_keyframe()  ◀────────┘  (a viewer's first recv(), a PLI, a queue overflow)

aiortc sends `av.Packet`s a track returns as they are: its H.264 "encoder" only packetizes them.
Two things aiortc does not do for packets, and this module does (measured in the WebRTC
findings): a PLI/FIR from the browser sets a flag only aiortc's own encoder reads, so
`attach_sender()` points the sender's keyframe hook at the shared encoder; and a viewer that
joins mid-GOP would wait for the next periodic IDR, so a track asks for one on its first
`recv()` and drops delta frames until it arrives. Requests from many viewers coalesce into one
IDR per `keyframe_interval`.

Per-viewer queues are bounded: a viewer that falls behind loses its queue and resyncs at the
next IDR (never a `MediaRelay(buffered=False)`, whose latest-only slot would corrupt a packet
stream). Audio is fanned out as decoded frames; aiortc encodes Opus per viewer (cheap).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import av
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from av.stream import Stream

from .aiortc_patches import route_keyframe_requests

__all__ = ["AudioFanout", "AudioTrack", "DecodingTrack", "PacketFanout", "PacketTrack", "attach_sender"]

log = logging.getLogger(__name__)


_Item = TypeVar("_Item", "av.Packet[Stream]", av.AudioFrame)
_Track = TypeVar("_Track", bound="_QueuedTrack[Any]")


class _Fanout(Generic[_Track]):
    """What both fanouts do with their viewers' tracks: keep them, forget one, end them all."""

    def __init__(self, *, max_queue: int) -> None:
        self.max_queue = max_queue
        self._tracks: set[_Track] = set()
        self._closed = False

    def _remove(self, track: _Track) -> None:
        self._tracks.discard(track)

    def close(self) -> None:
        """The stream ended: every track ends (its `recv()` raises `MediaStreamError`)."""
        if self._closed:
            return
        self._closed = True
        for track in list(self._tracks):
            track._end()
        self._tracks.clear()


class _QueuedTrack(MediaStreamTrack, Generic[_Item]):
    """A viewer's track fed by a fanout through a queue; `None` in the queue ends it."""

    def __init__(self, fanout: _Fanout[Any]) -> None:
        super().__init__()
        self._fanout = fanout
        self._queue: deque[_Item | None] = deque()
        self._ready = asyncio.Event()

    def _end(self) -> None:
        self._queue.append(None)
        self._ready.set()

    async def _next(self) -> _Item:
        """The next queued item, waiting for one; the end of the stream stops the track.

        Raises:
            MediaStreamError: the stream ended.
        """
        while not self._queue:
            self._ready.clear()
            # Idle wait for the next item; the fanout's close (`_end`, the session ended) ends it.
            await self._ready.wait()
        item = self._queue.popleft()
        if item is None:
            self.stop()
            raise MediaStreamError
        return item

    def stop(self) -> None:
        super().stop()
        self._fanout._remove(self)


class PacketFanout(_Fanout["PacketTrack"]):
    """The encoded video of one stream, handed to every viewer's track (loop side).

    `publish()` runs on the loop; `publish_threadsafe()` from the encoder thread. `on_keyframe`
    asks the encoder for an IDR (it may be called from the loop at any time; it should only
    set a flag the encoder reads before its next frame).
    """

    def __init__(
        self,
        on_keyframe: Callable[[], None] | None = None,
        *,
        max_queue: int = 60,
        keyframe_interval: float = 0.25,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(max_queue=max_queue)
        self.on_keyframe = on_keyframe
        self.keyframe_interval = keyframe_interval
        self._loop = loop
        self._last_request = -1e9
        self.packets = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.keyframe_requests_coalesced = 0

    @property
    def viewers(self) -> int:
        return len(self._tracks)

    @property
    def closed(self) -> bool:
        return self._closed

    def track(self) -> PacketTrack:
        """A new viewer's track; it receives packets from its first `recv()` on."""
        if self._closed:
            raise MediaStreamError("the stream has ended")
        track = PacketTrack(self)
        self._tracks.add(track)
        return track

    def request_keyframe(self) -> None:
        """Ask the shared encoder for an IDR, at most once per `keyframe_interval`."""
        now = time.monotonic()
        if now - self._last_request < self.keyframe_interval:
            self.keyframe_requests_coalesced += 1
            return
        self._last_request = now
        self.keyframe_requests += 1
        if self.on_keyframe is not None:
            self.on_keyframe()

    def publish(self, packet: av.Packet[Stream]) -> None:
        """Loop: one encoded frame (Annex B H.264, SPS/PPS in-band before each IDR)."""
        if self._closed:
            return
        self.packets += 1
        if packet.is_keyframe:
            self.keyframes += 1
        for track in self._tracks:
            track._put(packet)

    def publish_threadsafe(self, packet: av.Packet[Stream]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("PacketFanout needs its loop for publish_threadsafe()")
        try:
            loop.call_soon_threadsafe(self.publish, packet)
        except RuntimeError:  # the loop is closed: nobody is watching
            pass


class PacketTrack(_QueuedTrack["av.Packet[Stream]"]):
    """One viewer's view of a `PacketFanout`: a bounded queue that resyncs at IDRs."""

    kind = "video"

    def __init__(self, fanout: PacketFanout) -> None:
        super().__init__(fanout)
        self._fanout: PacketFanout = fanout
        self._started = False
        self._need_key = True
        self.packets = 0
        self.dropped = 0
        self.resyncs = 0

    def _put(self, packet: av.Packet[Stream]) -> None:
        if not self._started:
            return  # before DTLS completes: these would arrive as a burst of stale frames
        if len(self._queue) >= self._fanout.max_queue:
            # The viewer fell behind: start again from the next IDR.
            self.dropped += len(self._queue)
            self._queue.clear()
            self._need_key = True
            self.resyncs += 1
            self._fanout.request_keyframe()
        if self._need_key:
            if not packet.is_keyframe:
                self.dropped += 1
                return
            self._need_key = False
        self._queue.append(packet)
        self._ready.set()

    def request_keyframe(self) -> None:
        self._fanout.request_keyframe()

    async def recv(self) -> av.Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._started:
            # The sender starts reading once DTLS is up: join here with a fresh IDR.
            self._started = True
            self._fanout.request_keyframe()
        packet = await self._next()
        self.packets += 1
        return packet


def attach_sender(sender: RTCRtpSender, track: PacketTrack) -> None:
    """Route the sender's PLI/FIR handling to the shared encoder (aiortc's own encoder, which
    its handler asks for a keyframe, is bypassed by packets)."""
    route_keyframe_requests(sender, track.request_keyframe)


class DecodingTrack(MediaStreamTrack):
    """Decodes a `PacketTrack` back to frames, for a viewer whose browser offers no H.264
    (aiortc then encodes VP8 for that viewer alone). Decoding runs in the default executor."""

    kind = "video"

    def __init__(self, source: PacketTrack) -> None:
        super().__init__()
        self._source = source
        self._codec = av.CodecContext.create("h264", "r")
        self._codec.thread_count = 1

    def _decode(self, packet: av.Packet[Stream]) -> list[av.VideoFrame]:
        try:
            return list(self._codec.decode(packet))
        except av.InvalidDataError:
            return []

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        while True:
            try:
                packet = await self._source.recv()  # idle wait, ended by the source's end or stop
            except MediaStreamError:
                self.stop()
                raise
            # Bounded by the work: one packet's decode, CPU only, no I/O and no wait inside.
            frames = await loop.run_in_executor(None, self._decode, packet)
            if frames:
                frame = frames[-1]
                frame.pts = packet.pts
                frame.time_base = packet.time_base
                return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


_AUDIO_TIME_BASE = fractions.Fraction(1, 48000)


class AudioFanout(_Fanout["AudioTrack"]):
    """Decoded audio of one stream for every viewer (Opus is encoded per viewer by aiortc)."""

    def __init__(self, *, max_queue: int = 50) -> None:
        super().__init__(max_queue=max_queue)

    def track(self) -> AudioTrack:
        track = AudioTrack(self)
        if self._closed:
            track._end()
        else:
            self._tracks.add(track)
        return track

    def publish(self, frame: av.AudioFrame) -> None:
        for track in self._tracks:
            track._put(frame)


class AudioTrack(_QueuedTrack[av.AudioFrame]):
    """One viewer's audio: frames resampled to the s16 48 kHz stereo aiortc's Opus takes."""

    kind = "audio"

    def __init__(self, fanout: AudioFanout) -> None:
        super().__init__(fanout)
        self._fanout: AudioFanout = fanout
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
        self._pts = 0
        self.dropped = 0

    def _put(self, frame: av.AudioFrame) -> None:
        if len(self._queue) >= self._fanout.max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(frame)
        self._ready.set()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            item = await self._next()
            item.pts = None
            out = self._resampler.resample(item)
            if not out:
                continue
            frame = out[0] if len(out) == 1 else _join(out)
            frame.pts = self._pts
            frame.time_base = _AUDIO_TIME_BASE
            self._pts += frame.samples
            return frame


def _join(frames: list[av.AudioFrame]) -> av.AudioFrame:
    import numpy as np

    data = np.concatenate([f.to_ndarray() for f in frames], axis=1)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
    frame.sample_rate = 48000
    return frame


def describe(track: Any) -> dict[str, Any]:
    """Per-viewer figures for the status (packets sent, dropped, resyncs)."""
    return {k: getattr(track, k, None) for k in ("packets", "dropped", "resyncs")}
