"""RTMP ingest, RTMP output and WHEP playback at the gateway, on the engine's own parts.

One code path with the engine: the engine's `RtmpServer` takes the publish (stream keys, the
same `rtmp://host:port/live/{key}` URL), the engine's `WebRTCHub` serves `/live/{stream}/whep`
and the player page, and the engine's `RtmpPushSink`/`WhepSink` send the output. What differs
is that the gateway copies packets and never decodes or encodes video:

    ffmpeg/OBS ──RTMP──▶ RtmpServer ──FLV tags──▶ RtmpCopyIngest ──EncodedPacket──▶ TsMuxer
        ──MPEG-TS, one segment per keyframe──▶ /ai/trickle/{stream} ──(live.py)──▶ runner
    runner ──(live.py)──▶ /ai/trickle/{stream}-out ──TsDemuxer──EncodedPacket──▶ SinkFanout
        ──▶ WhepSink (WebRTC viewers, through the hub), RtmpPushSink (the stream's RTMP output)

The output side reads the stream's viewer channel, which survives a runner swap (live.py), so
WHEP viewers and the RTMP output go on after a swap with one keyframe gap and no reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
from aiohttp import web

from pipelines.errors import InvalidRequestError

from ..api.errors import ApiError
from ..egress import SinkFanout
from ..errors import ConfigError, SessionLimitError, StreamBusyError
from ..ingest import Ingest, IngestError
from ..media.audio_encoder import AudioEncoder
from ..media.audio_frames import aac_config_info, adts_to_raw
from ..media.packets import OUTPUT_TIME_BASE, EncodedPacket
from ..media.ts_demux import PesUnit, TsDemuxer
from ..media.threads import run_in_thread
from ..media.ts_mux import SEGMENT_START, TsMuxer
from ..media.video_encoder import EncoderConfig, H264Encoder
from ..rtmp.flv import CODED_FRAMES, SEQUENCE_START, AudioTag, FlvError, VideoTag, annexb_nals
from ..rtmp.ingest import RtmpIngest
from ..rtmp.push import RtmpPushSink, redact
from ..rtmp.server import RtmpServer
from ..settings import Settings
from ..tls import https_context
from ..webrtc.engine import WhepSink
from ..webrtc.peers import Playback, Publisher, StreamNotFound, WebRTCHub
from .config import GatewayConfig
from .live import LiveError, LiveStream, LiveStreams, LocalWriter, read_segments, segment_chunks
from .live_auth import StartRefused, StartSettings, start_settings

__all__ = ["LIVE_MEDIA_KEY", "GatewayDirectory", "LiveMedia", "RelayedStream", "RtmpCopyIngest", "WhipEncoder",
           "avc_parameter_sets", "settings_for"]

log = logging.getLogger(__name__)

_START_CODE = b"\x00\x00\x00\x01"
_NAL_IDR = 5


def settings_for(config: GatewayConfig) -> Settings:
    """The engine settings the reused RTMP server and WebRTC routes read, from the gateway's."""
    return Settings(
        host=config.host, rtmp_port=config.rtmp_port, stream_keys=dict(config.stream_keys),
        ice_servers=tuple(config.ice_servers), ice_username=config.ice_username,
        ice_credential=config.ice_credential, webrtc_hosts=tuple(config.webrtc_hosts),
        rtmp_output=config.rtmp_output, tls_cert=config.tls_cert, tls_key=config.tls_key,
    )  # fmt: skip


def avc_parameter_sets(record: bytes) -> tuple[int, list[bytes]]:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1): the NAL length size of the
    coded frames and the SPS and PPS NAL units."""
    if len(record) < 7 or record[0] != 1:
        raise FlvError("bad AVC configuration record")
    length_size = (record[4] & 0x03) + 1
    nals: list[bytes] = []
    at = 5
    for mask in (0x1F, 0xFF):  # SPS count (5 bits), then PPS count (8 bits)
        if at >= len(record):
            raise FlvError("truncated AVC configuration record")
        count, at = record[at] & mask, at + 1
        for _ in range(count):
            size = int.from_bytes(record[at : at + 2], "big")
            nal = record[at + 2 : at + 2 + size]
            if len(nal) != size or not size:
                raise FlvError("truncated AVC configuration record")
            nals.append(nal)
            at += 2 + size
    return length_size, nals


def _length_prefixed(data: bytes, length_size: int) -> list[bytes]:
    nals, at = [], 0
    while at + length_size <= len(data):
        size = int.from_bytes(data[at : at + length_size], "big")
        at += length_size
        if size <= 0 or at + size > len(data):
            raise FlvError("truncated AVC coded frame")
        nals.append(data[at : at + size])
        at += size
    return nals


class RtmpCopyIngest(RtmpIngest):
    """An RTMP publisher's tags as `EncodedPacket`s, on the loop, without decoding: H.264 in
    Annex B with SPS/PPS in front of every IDR (what MPEG-TS needs), AAC raw with its config.

    The connection calls `put`/`end`/`fail` as with the engine's ingest; `on_packet` and
    `on_end` (set by `LiveMedia` once the stream is started) take what comes out."""

    name = "rtmp-copy"

    def __init__(self, stream: str, on_stop: Callable[[], None]) -> None:
        super().__init__(stream, on_stop=on_stop)
        self.on_packet: Callable[[EncodedPacket], None] = lambda packet: None
        self.on_end: Callable[[str | None], None] = lambda error: None
        self.error: str | None = None
        self._finished = False
        self._length_size = 4
        self._parameter_sets = b""
        self._asc: bytes | None = None

    def put(self, tag: VideoTag | AudioTag, timestamp: int, arrival: float) -> None:
        if self._finished:
            return
        self.tags += 1
        try:
            packet = self._video_packet(tag, timestamp) if isinstance(tag, VideoTag) else self._audio_packet(tag, timestamp)
        except FlvError as exc:
            self.fail(IngestError(f"rtmp stream {self.stream}: {exc}"))
            self.stop()  # hang up: the gateway cannot relay what it cannot cut into segments
            return
        if packet is not None:
            self.on_packet(packet)

    async def wait_room(self) -> None:
        """Nothing is queued: packets go into the input channel as they arrive."""

    def end(self) -> None:
        if not self._finished:
            self._finished = True
            self.on_end(self.error)

    def fail(self, error: IngestError) -> None:
        if self.error is None:
            self.error = str(error)
        self.end()

    async def run(self, target: Any) -> None:
        raise IngestError("the gateway's RTMP ingest copies packets; it feeds no session")

    def _video_packet(self, tag: VideoTag, ts: int) -> EncodedPacket | None:
        if tag.codec != "h264":
            raise FlvError(f"the gateway relays H.264 video, not {tag.codec}")
        self.video_codec = "h264"
        if tag.kind == SEQUENCE_START:
            self._length_size, sets = avc_parameter_sets(tag.data)
            self._parameter_sets = b"".join(_START_CODE + nal for nal in sets)
            return None
        if tag.kind != CODED_FRAMES or not self._parameter_sets:
            return None  # no configuration yet (joined mid-stream), or end of sequence
        nals = _length_prefixed(tag.data, self._length_size)
        if not nals:
            return None
        keyframe = any(nal[0] & 0x1F == _NAL_IDR for nal in nals)
        body = b"".join(_START_CODE + nal for nal in nals)
        if keyframe:
            body = self._parameter_sets + body
        self.video_frames += 1
        self.last_video_ms = ts
        return EncodedPacket("video", "h264", body, (ts + tag.cts) * 90, ts * 90, OUTPUT_TIME_BASE, keyframe=keyframe)

    def _audio_packet(self, tag: AudioTag, ts: int) -> EncodedPacket | None:
        if tag.config:
            self._asc = tag.data
            self.audio_codec = "aac"
            self._audio_rate, self._audio_channels = aac_config_info(tag.data)
            return None
        if self._asc is None or not tag.data:
            return None
        self.audio_frames += 1
        self.last_audio_ms = ts
        rate = self._audio_rate or 48000
        return EncodedPacket("audio", "aac", tag.data, ts * 90, ts * 90, OUTPUT_TIME_BASE, sample_rate=rate,
                             channels=self._audio_channels or 2, extradata=self._asc,
                             duration=round(1024 * 90000 / rate))  # fmt: skip


def _adts_frames(payload: bytes) -> list[bytes]:
    """The ADTS frames of one PES (a muxer may put several in one)."""
    frames, at = [], 0
    while at + 7 <= len(payload) and payload[at] == 0xFF and payload[at + 1] & 0xF0 == 0xF0:
        size = ((payload[at + 3] & 0x03) << 11) | (payload[at + 4] << 3) | (payload[at + 5] >> 5)
        if size < 7 or at + size > len(payload):
            break
        frames.append(payload[at : at + size])
        at += size
    return frames


class RelayedStream:
    """A live stream's media at the gateway: a publisher's packets muxed into its input
    channel, and its viewer channel demuxed into packets for WHEP viewers and RTMP outputs."""

    def __init__(self, media: LiveMedia, stream: LiveStream) -> None:
        self.media = media
        self.stream = stream
        self.name = stream.name
        self.fanout = SinkFanout(lambda message: log.warning("live %s: %s", self.name, message))
        self.whep: WhepSink | None = None
        self.rtmp_outputs: list[RtmpPushSink] = []
        self.ingest: RtmpCopyIngest | None = None
        self.whip: WhipEncoder | None = None
        #: Hangs up the publisher when the stream ends under it (RTMP: close; WHIP: the hub).
        self.stop_input: Callable[[], None] | None = None
        self._muxer = TsMuxer()
        self._input = LocalWriter(stream.input_channel)
        self.packets_in = 0
        self.packets_out = 0
        self._task = asyncio.create_task(self._read_output(), name=f"live-media-{self.name}")

    # -- input: a publisher's packets ----------------------------------------------------------

    def put(self, packet: EncodedPacket) -> None:
        if self.stream.ended is not None:
            return
        self.packets_in += 1
        for chunk in self._muxer.mux(packet):
            if chunk is SEGMENT_START:
                self._input.begin()
            else:
                self._input.write(chunk)

    def end_input(self, error: str | None) -> None:
        """The publisher left: the input channel closes, the runner drains, the stream ends."""
        if error is not None:
            log.warning("live %s: input failed: %s", self.name, error)
        self._input.end()
        self.media.live.server.close_channel(self.name)

    # -- output: packets of the viewer channel ---------------------------------------------------

    def add_rtmp_output(self, url: str, *, guarded: bool = False) -> None:
        """Push the output to `url`; `guarded`: a publisher gave it (URL guard at each connect)."""
        sink = RtmpPushSink(url, name=f"rtmp-out-{len(self.rtmp_outputs)}", guarded=guarded)
        self.rtmp_outputs.append(sink)
        self.fanout.attach(sink)
        log.info("live %s: output pushed to %s", self.name, redact(url))

    def playback(self, on_end: Callable[[WhepSink], Any]) -> Playback:
        if self.whep is None or self.whep.done:
            self.whep = WhepSink(self.name, lambda: None, on_end)  # every output segment starts with a keyframe
            self.fanout.attach(self.whep)
        return self.whep.playback

    async def _read_output(self) -> None:
        channel = self.stream.output.channel
        try:
            async for segment in read_segments(channel, start=-1):
                demuxer = TsDemuxer()  # each runner segment carries its own tables
                async for chunk in segment_chunks(segment):
                    for unit in demuxer.feed(chunk):
                        self._unit(unit)
                for unit in demuxer.end_segment():
                    self._unit(unit)
        finally:
            if self.stop_input is not None:
                self.stop_input()  # the stream ended under its publisher: hang up
            self.media.forget(self)
            await self.fanout.aclose(2.0)

    def _unit(self, unit: PesUnit) -> None:
        kind, codec = unit.stream.kind, unit.stream.codec
        pts = unit.pts
        if pts is None:
            return
        if kind == "video" and codec == "h264":
            key = any(nal and nal[0] & 0x1F == _NAL_IDR for nal in annexb_nals(unit.payload))
            dts = unit.dts if unit.dts is not None else pts
            self._out(EncodedPacket("video", "h264", unit.payload, pts, dts, OUTPUT_TIME_BASE, keyframe=key))
        elif kind == "audio" and codec == "aac":
            for frame in _adts_frames(unit.payload):
                try:
                    _, asc = adts_to_raw(frame)
                except ValueError:
                    continue
                rate, channels = aac_config_info(asc)
                rate = rate or 48000
                duration = round(1024 * 90000 / rate)
                self._out(EncodedPacket("audio", "aac", frame, pts, pts, OUTPUT_TIME_BASE, sample_rate=rate,
                                        channels=channels, adts=True, duration=duration))  # fmt: skip
                pts += duration
        elif kind == "audio":
            self._out(EncodedPacket("audio", codec, unit.payload, pts, pts, OUTPUT_TIME_BASE))

    def _out(self, packet: EncodedPacket) -> None:
        self.packets_out += 1
        self.fanout.put(packet)

    def status(self) -> dict[str, Any]:
        return {
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "whep": self.whep.status() if self.whep is not None else None,
            "rtmp_outputs": [sink.status() for sink in self.rtmp_outputs],
            "ingest": self.ingest.status() if self.ingest is not None else None,
            "whip": self.whip.status() if self.whip is not None else None,
        }

    async def aclose(self) -> None:
        if self.whip is not None:
            self.whip.end("gateway stopping")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class WhipEncoder:
    """A WHIP publisher's media into the stream's input. aiortc hands out decoded frames only,
    so this is the one place the gateway encodes: once per stream, in a thread of its own, video
    with x264 zero latency (the engine's `H264Encoder`) and audio to AAC (the engine's
    `AudioEncoder`: MPEG-TS as the gateway writes it carries AAC, and the runner's output and the
    RTMP outputs are AAC anyway). The queue keeps the newest `max_frames` frames of either kind."""

    def __init__(self, relay: RelayedStream, *, max_frames: int = 90) -> None:
        self.relay = relay
        self.max_frames = max_frames
        self._frames: deque[av.VideoFrame | av.AudioFrame] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self._loop = asyncio.get_running_loop()
        self._encoder = H264Encoder(EncoderConfig())
        self._audio = AudioEncoder()
        self.reason = ""
        self.dropped = 0
        self.done = run_in_thread(self._run, f"whip-encode-{relay.name[:16]}")
        self.done.add_done_callback(self._finished)

    def status(self) -> dict[str, Any]:
        return {"frames": self._encoder.frames, "audio_packets": self._audio.packets, "dropped": self.dropped,
                "queued": len(self._frames)}  # fmt: skip

    # Publisher (the hub, on the loop)
    def put_video(self, frame: av.VideoFrame) -> None:
        self._put(frame)

    def put_audio(self, frame: av.AudioFrame) -> None:
        self._put(frame)

    def _put(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        with self._cond:
            if self._ended:
                return
            if len(self._frames) >= self.max_frames:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._cond.notify()

    def end(self, reason: str, *, failed: bool = False) -> None:
        self.reason = reason
        with self._cond:
            self._ended = True
            self._cond.notify()

    # encode thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._frames and not self._ended:
                    self._cond.wait()  # idle wait for frames: `end` notifies it
                frame = self._frames.popleft() if self._frames else None
            if frame is None:
                break
            if frame.pts is None or frame.time_base is None:
                continue
            if isinstance(frame, av.AudioFrame):
                packets = self._audio.encode(frame)  # (without the encoder's priming packet)
            else:
                packets = self._encoder.encode(frame, round(frame.pts * frame.time_base * 90000)) or []
            if packets:
                self._deliver(packets)
        self._deliver(self._encoder.flush() + self._audio.flush())

    def _deliver(self, packets: list[EncodedPacket]) -> None:
        for packet in packets:
            with contextlib.suppress(RuntimeError):  # the loop is closing: the stream is gone
                self._loop.call_soon_threadsafe(self.relay.put, packet)

    def _finished(self, future: asyncio.Future[None]) -> None:
        error = None if future.cancelled() or future.exception() is None else repr(future.exception())
        self.relay.end_input(error)


class GatewayDirectory:
    """The WebRTC hub's `StreamDirectory` at the gateway: WHEP plays a live stream's output."""

    hub: WebRTCHub | None = None

    def __init__(self) -> None:
        self.media: LiveMedia | None = None

    async def playback(self, stream: str) -> Playback:
        relay = self.media.relay(stream) if self.media is not None else None
        if relay is None:
            raise StreamNotFound(f"No live stream {stream!r}.")
        return relay.playback(self._ended)

    async def _ended(self, sink: WhepSink) -> None:
        if self.hub is not None:
            await self.hub.close_viewers(sink.playback.video, "stream ended")

    async def publish(self, stream: str) -> Publisher:
        if self.media is None:
            raise SessionLimitError("The gateway is starting.")
        media = self.media
        pending = media.whip_queries.get(stream)  # go-livepeer's WHIP path: its query and base URL
        try:
            if pending is not None:
                relay = await media.begin(stream, "livepeer-whip", query=pending[0], base=pending[1])
            else:
                relay = await media.begin(stream, "whip")
        except StartRefused as exc:
            raise ApiError(exc.status, exc.message) from None
        relay.whip = WhipEncoder(relay)
        hub = self.hub

        def stop() -> None:
            if hub is not None:
                hub.close_stream_soon(stream, "stream ended", kind="whip")

        relay.stop_input = stop
        return relay.whip


class LiveMedia:
    """The gateway's RTMP server and every stream's `RelayedStream`; `running()` owns them."""

    def __init__(self, live: LiveStreams, config: GatewayConfig, settings: Settings) -> None:
        self.live = live
        self.config = config
        self.settings = settings
        self.relays: dict[str, RelayedStream] = {}
        self.rtmp: RtmpServer | None = None
        #: A WHIP POST on go-livepeer's path being answered, by stream: its query string and the
        #: gateway's base URL as the publisher reached it (`live_routes._whip` sets it, `begin` reads it).
        self.whip_queries: dict[str, tuple[str, str]] = {}
        #: The RTMPS listener (`rtmps_port` with `tls_cert`/`tls_key`): the same server behind TLS.
        self.rtmps: RtmpServer | None = None

    def trickle_base(self) -> str:
        """Where runners reach the gateway's channels for a stream started without an HTTP request."""
        base = self.config.live_trickle_url
        if not base:
            if self.config.public_url:
                base = self.config.public_url.rstrip("/") + "/ai/trickle/"
            else:
                host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
                scheme = "https" if self.config.tls_cert is not None else "http"
                base = f"{scheme}://{host}:{self.config.port}/ai/trickle/"
        return base if base.endswith("/") else base + "/"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LiveMedia]:
        try:
            if self.config.rtmp_port is not None:
                self.rtmp = RtmpServer(self, self.settings, port=self.config.rtmp_port, ingest_factory=RtmpCopyIngest)
                await self.rtmp.start()
            if self.config.rtmps_port is not None:
                context = https_context(self.config.tls_cert, self.config.tls_key)
                if context is None:
                    raise ConfigError("--rtmps-port needs --tls-cert and --tls-key.")
                self.rtmps = RtmpServer(self, self.settings, port=self.config.rtmps_port, ssl_context=context,
                                        ingest_factory=RtmpCopyIngest)  # fmt: skip
                await self.rtmps.start()
            yield self
        finally:
            for server in (self.rtmps, self.rtmp):
                if server is not None:
                    await server.close()
            for relay in list(self.relays.values()):
                await relay.aclose()
            self.relays.clear()

    def relay(self, name: str) -> RelayedStream | None:
        """The stream's relay, made on first use (a stream published over trickle gets one for
        its first WHEP viewer); None when no such stream is live."""
        relay = self.relays.get(name)
        stream = self.live.get(name)
        if relay is not None and relay.stream is stream:
            return relay
        if stream is None or stream.ended is not None:
            return None
        relay = self.relays[name] = RelayedStream(self, stream)
        return relay

    def forget(self, relay: RelayedStream) -> None:
        if self.relays.get(relay.name) is relay:
            del self.relays[relay.name]

    async def start_direct(self, stream: str, ingest: Ingest) -> LiveStream:
        """An RTMP publish accepted by the server: the stream starts on a runner, with the start
        keys of the publish URL's query (`rtmp://gw/live/KEY?pipeline=…&params=…`)."""
        if not isinstance(ingest, RtmpCopyIngest):
            raise InvalidRequestError(f"the gateway cannot relay a {ingest.name} input")
        try:  # the publish URL's query carries go-livepeer's start keys, as through MediaMTX
            relay = await self.begin(stream, "rtmp", query=ingest.query)
        except StartRefused as exc:
            raise InvalidRequestError(exc.message) from None
        relay.ingest = ingest
        relay.stop_input = ingest.stop
        ingest.on_packet = relay.put
        ingest.on_end = relay.end_input
        return relay.stream

    async def begin(self, stream: str, source_type: str, *, query: str = "", base: str = "") -> RelayedStream:
        """Start a directly published stream (RTMP, WHIP) on a runner with the operator's
        settings (`--live-pipeline`, the live params, `--rtmp-output`), over which the `query` (of a
        WHIP POST on go-livepeer's path, or of the RTMP publish URL) and the live auth webhook's
        answer go: one code path with the start hook (`live_auth.start_settings`). `base`: the
        gateway's URL as the publisher reached it (the webhook's URLs).

        Raises `StreamBusyError` (already live), `StartRefused` (bad query, webhook refused) or
        `SessionLimitError` (no runner took it)."""
        if self.live.get(stream) is not None:
            raise StreamBusyError(f"Stream {stream!r} is already being published.")
        base = base or self.trickle_base().removesuffix("/ai/trickle/")
        output = self.config.rtmp_output.replace("{stream}", stream) if self.config.rtmp_output else ""
        defaults = StartSettings(pipeline=self.config.live_pipeline, params=dict(self.settings.live_params),
                                 stream_id=stream, rtmp_output=output)  # fmt: skip
        chosen = await start_settings(self.live.http, self.config, stream=stream, source_type=source_type,
                                      raw_query=query, base=base, defaults=defaults,
                                      params_error="Invalid pipeline params")  # fmt: skip
        try:
            await self.start_stream(stream, chosen, self.trickle_base())
        except LiveError as exc:
            raise SessionLimitError(f"no runner took the stream: {exc.message}") from None
        relay = self.relay(stream)
        assert relay is not None
        return relay

    async def start_stream(self, stream: str, chosen: StartSettings, trickle_base: str) -> LiveStream:
        """Start `stream` on a runner with `chosen` and push its output to the chosen RTMP
        output; raises `LiveError` when no runner takes it."""
        started = await self.live.start(stream, stream_id=chosen.stream_id, model_id=chosen.pipeline,
                                        params=chosen.params, trickle_base=trickle_base,
                                        orchestrator=chosen.orchestrator)  # fmt: skip
        if chosen.rtmp_output:
            relay = self.relay(stream)
            if relay is not None:
                relay.add_rtmp_output(chosen.rtmp_output, guarded=chosen.guarded)
        return started


#: The app's `LiveMedia` (set by the gateway app's cleanup context).
LIVE_MEDIA_KEY: web.AppKey[LiveMedia] = web.AppKey("gateway_live_media")
