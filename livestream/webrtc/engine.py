"""The WebRTC hub wired to live sessions: WHEP viewers as one session sink, WHIP as an ingest.

    session encode ──EncodedPacket──▶ WhepSink (one per session) ──▶ PacketFanout ──▶ viewers
         ▲                                      └── AAC decoded once ──▶ AudioFanout ──▶ Opus per viewer
         └── request_keyframe() ◀── viewers' joins and PLIs (coalesced)

    browser ──WHIP──▶ aiortc (decodes) ──frames──▶ WhipIngest ──▶ session (a direct stream)

The first viewer of a stream attaches the sink; it stays attached (costing nothing without
viewers) until the session ends, which ends every viewer of that stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiohttp import web

from pipelines.errors import InvalidRequestError

from ..errors import SessionLimitError, StreamBusyError
from ..live import LIVE_MANAGER_KEY
from ..ingest import FrameTarget, Ingest, IngestError, InputStalled
from ..media.packets import AudioSource
from ..egress import EncodedPacket, QueuedSink
from .peers import Playback, StreamNotFound, WebRTCHub
from .tracks import AudioFanout, PacketFanout

__all__ = ["SessionDirectory", "WhepSink", "WhipIngest"]

log = logging.getLogger(__name__)


class WhepSink(QueuedSink):
    """A session's output for its WebRTC viewers: video packets passed through, audio decoded."""

    def __init__(
        self,
        stream: str,
        request_keyframe: Callable[[], None],
        on_end: Callable[[WhepSink], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(f"whep-{stream}", max_packets=120)
        self.stream = stream
        self.playback = Playback(PacketFanout(request_keyframe), AudioFanout())
        self._on_end = on_end
        self._audio_codec: av.AudioCodecContext | None = None
        self._audio_key: tuple[str, bytes | None] | None = None
        self._pts_offset = 0
        self._last_pts: int | None = None

    def status(self) -> dict[str, Any]:
        video = self.playback.video
        return {
            "viewers": video.viewers,
            "packets": video.packets,
            "keyframes": video.keyframes,
            "keyframe_requests": video.keyframe_requests,
            "keyframe_requests_coalesced": video.keyframe_requests_coalesced,
        }

    async def consume(self) -> None:
        loop = asyncio.get_running_loop()
        video, audio = self.playback.video, self.playback.audio
        assert audio is not None
        video._loop = loop
        try:
            # Idle wait for packets: ended by the sink's `end()`, and `aclose(timeout)` cancels it.
            while (item := await self.get()) is not None:
                if item.kind == "video":
                    packet = av.Packet(item.data)
                    pts = self._monotonic_pts(item)
                    packet.pts, packet.dts, packet.time_base = pts, pts, item.time_base
                    packet.is_keyframe = item.keyframe
                    video.publish(packet)
                elif item.kind == "audio" and audio._tracks:
                    # Bounded by the work: one AAC packet's decode, CPU only, no wait inside.
                    for frame in await loop.run_in_executor(None, self._decode_audio, item):
                        audio.publish(frame)
        finally:
            video.close()
            audio.close()
            if self._on_end is not None:
                await self._on_end(self)

    def _monotonic_pts(self, item: EncodedPacket) -> int:
        """The packet's pts, kept increasing across an encoder restart (a new input clock):
        RTP timestamps that jump back make browsers drop frames as late."""
        pts = item.pts + self._pts_offset
        if self._last_pts is not None and pts <= self._last_pts:
            step = max(1, round(1 / (30 * item.time_base)))  # about one frame
            self._pts_offset += self._last_pts + step - pts
            pts = self._last_pts + step
        self._last_pts = pts
        return pts

    def _decode_audio(self, item: EncodedPacket) -> list[av.AudioFrame]:
        """Worker thread: AAC (raw with extradata, or ADTS) to frames for the Opus encoders."""
        key = (item.codec, item.extradata)
        if self._audio_codec is None or key != self._audio_key:
            try:
                codec = av.CodecContext.create(item.codec, "r")
            except (ValueError, av.FFmpegError):
                return []
            if not isinstance(codec, av.AudioCodecContext):
                return []
            if item.extradata:
                codec.extradata = item.extradata
            self._audio_codec, self._audio_key = codec, key
        packet = av.Packet(item.data)
        packet.pts, packet.time_base = item.pts, item.time_base
        try:
            return list(self._audio_codec.decode(packet))
        except av.FFmpegError:
            return []


class WhipIngest(Ingest):
    """A WHIP publisher's decoded frames as a session's input (`ingest.py`'s contract)."""

    name = "whip"

    def __init__(self, stream: str, *, timeout: float, on_stop: Callable[[], None] | None = None) -> None:
        self.stream = stream
        self.timeout = timeout
        self._on_stop = on_stop
        self._target: FrameTarget | None = None
        self._ended = asyncio.Event()
        self._reason = ""
        self._failed = False
        self._audio: tuple[int, int] | None = None
        self._last_input = time.monotonic()
        self.video_frames = 0
        self.audio_frames = 0

    def status(self) -> dict[str, object]:
        return {"kind": self.name, "video_frames": self.video_frames, "audio_frames": self.audio_frames}

    # Publisher (peers.py), on the loop
    def put_video(self, frame: av.VideoFrame) -> None:
        self._last_input = time.monotonic()
        target = self._target
        if target is None:
            return  # the session is still loading its pipeline: live video moves on
        self.video_frames += 1
        target.on_input()
        target.put_video(frame)

    def put_audio(self, frame: av.AudioFrame) -> None:
        target = self._target
        if target is None:
            return
        layout = (frame.sample_rate, len(frame.layout.channels))
        if layout != self._audio:
            self._audio = layout
            target.set_audio_source(AudioSource("opus", layout[0], layout[1], copy=False))
        self.audio_frames += 1
        target.put_audio(frame)

    def end(self, reason: str, *, failed: bool = False) -> None:
        self._reason, self._failed = reason, failed
        self._ended.set()

    # Ingest
    async def run(self, target: FrameTarget) -> None:
        self._target = target
        self._last_input = time.monotonic()
        try:
            while not self._ended.is_set():
                left = self._last_input + self.timeout - time.monotonic()
                if left <= 0:
                    raise InputStalled(f"input stalled: no WHIP video for {self.timeout:g} s; ending the stream")
                try:
                    async with asyncio.timeout(min(left, 1.0)):
                        await self._ended.wait()
                except TimeoutError:
                    continue
            if self._failed:
                raise IngestError(self._reason)
        finally:
            self._target = None
            if self._on_stop is not None:
                self._on_stop()

    def stop(self) -> None:
        self._ended.set()

    def abort(self) -> None:
        self._ended.set()


class SessionDirectory:
    """`StreamDirectory` over the app's `SessionManager` (see `peers.py`)."""

    hub: WebRTCHub | None = None

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._sinks: dict[str, tuple[Any, WhepSink]] = {}

    async def playback(self, stream: str) -> Playback:
        session = self._app[LIVE_MANAGER_KEY].get(stream)
        if session is None or session.finished:
            raise StreamNotFound(f"No live stream {stream!r}.")
        current = self._sinks.get(stream)
        if current is not None and current[0] is session and not current[1].done:
            return current[1].playback
        sink = WhepSink(stream, session.request_keyframe, self._stream_ended)
        self._sinks[stream] = (session, sink)
        session.attach_sink(sink)
        return sink.playback

    async def _stream_ended(self, sink: WhepSink) -> None:
        current = self._sinks.get(sink.stream)
        if current is not None and current[1] is sink:
            del self._sinks[sink.stream]
        if self.hub is not None:
            # Only this session's viewers: a new session of the same name has its own sink.
            await self.hub.close_viewers(sink.playback.video, "stream ended")

    async def publish(self, stream: str) -> WhipIngest:
        manager = self._app[LIVE_MANAGER_KEY]

        def on_stop() -> None:
            if self.hub is not None:
                self.hub.close_stream_soon(stream, "stream ended", kind="whip")

        ingest = WhipIngest(stream, timeout=manager.config.input_timeout, on_stop=on_stop)
        await manager.start_direct(stream, ingest)  # raises StreamBusyError, SessionLimitError, InvalidRequestError
        return ingest
