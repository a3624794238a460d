"""RTMP push: a session output that publishes the processed stream to an rtmp:// URL.

`RtmpPushSink` is a `QueuedSink` (`livestream.live.sinks`): it takes the session's encoded
packets (H.264 Annex B, AAC), turns them into FLV tags (AVC sequence header from the SPS/PPS
in front of each IDR, AAC AudioSpecificConfig) and sends them over its own RTMP client
connection (`protocol.ClientConnection`). When the destination refuses, drops or stalls, the
error is an `error` event on the session and the sink reconnects after 1, 2, 4 ... 30 s,
resuming at a fresh keyframe; the session and its other outputs never wait for it.

A client-given URL (`guarded=True`) goes through the URL guard (`pipelines.url_guard`) before
each connect, and the socket connects to the address the guard checked, not to a second DNS
answer; the tcUrl keeps the host name. A refusal is an error event and a retry, like a refused
connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pipelines.url_guard import UrlRefusedError, checked_address

from ..egress import EncodedPacket, QueuedSink
from ..media.audio_frames import adts_to_raw
from .flv import SEQUENCE_START, aac_tag, annexb_nals, avc_config, avc_tag, avcc_from_nals
from .flv import CODED_FRAMES, FlvError
from .protocol import ClientConnection, ProtocolError, PublishStarted, split_rtmp_url

__all__ = ["RtmpPushSink", "redact"]

log = logging.getLogger(__name__)

_NAL_SPS, _NAL_PPS, _NAL_AUD = 7, 8, 9


def redact(url: str) -> str:
    """The URL without its stream key (keys are secrets: Twitch, YouTube)."""
    head, sep, _ = url.rpartition("/")
    return f"{head}/***" if sep and head.count("/") >= 3 else url


class RtmpPushSink(QueuedSink):
    """Publishes the session's output to `url`; reconnects with backoff (module docstring)."""

    def __init__(
        self,
        url: str,
        request_keyframe: Callable[[], None] | None = None,
        *,
        name: str = "rtmp-push",
        connect_timeout: float = 10.0,
        send_timeout: float = 10.0,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_packets: int = 512,
        guarded: bool = False,
    ) -> None:
        super().__init__(name, max_packets=max_packets)
        split_rtmp_url(url)  # fail now on a bad URL
        self.url = url
        #: A stream client gave the URL: each connect is checked and pinned (module docstring).
        self.guarded = guarded
        self.request_keyframe = request_keyframe or (lambda: None)
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connects = 0
        self.failures = 0
        self.sent_packets = 0
        self.connected = False
        self.last_error: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "url": redact(self.url),
            "connected": self.connected,
            "connects": self.connects,
            "failures": self.failures,
            "sent_packets": self.sent_packets,
            "last_error": self.last_error,
        }

    async def consume(self) -> None:
        backoff = self.min_backoff
        while True:
            try:
                await self._publish_once()
                return
            except (OSError, ProtocolError, TimeoutError, FlvError, UrlRefusedError) as exc:
                self.connected = False
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.report(f"rtmp push to {redact(self.url)} failed: {self.last_error}; retrying in {backoff:g} s")
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)
            self.clear()  # resume at a fresh keyframe, not with stale packets
            self.request_keyframe()

    async def _publish_once(self) -> None:
        host, port, app, name, tc_url = split_rtmp_url(self.url)
        async with asyncio.timeout(self.connect_timeout):
            if self.guarded:
                host = await checked_address(self.url, schemes=("rtmp", "rtmps"), timeout_s=self.connect_timeout)
            reader, writer = await asyncio.open_connection(host, port)
        try:
            proto = ClientConnection(app, name, tc_url)
            async with asyncio.timeout(self.connect_timeout):
                writer.write(proto.data_to_send())
                while not proto.published:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionResetError("the server closed the connection before Publish.Start")
                    proto.feed(data)
                    writer.write(proto.data_to_send())
                    await writer.drain()
            self.connects += 1
            self.connected = True
            log.info("rtmp push to %s: publishing", redact(self.url))
            read_task = asyncio.create_task(self._read(reader, proto, writer), name=f"rtmp-push-read-{self.name}")
            try:
                await self._send(proto, writer, read_task)
            finally:
                read_task.cancel()
                await asyncio.wait([read_task])  # bounded: cancelled, it ends at its next await
                if not read_task.cancelled() and (error := read_task.exception()) is not None:
                    # `_send` raised it already when it ended the publish: logged, not raised twice.
                    log.debug("rtmp push to %s: reader ended: %s: %s", redact(self.url), type(error).__name__, error)
        finally:
            self.connected = False
            writer.close()
            # The connection is being dropped anyway (often because it already broke).
            await self._last_step("socket close", 1.0, writer.wait_closed())

    async def _read(self, reader: asyncio.StreamReader, proto: ClientConnection, writer: asyncio.StreamWriter) -> None:
        """Acknowledgements, pings and errors from the server while we publish."""
        while True:
            data = await reader.read(65536)  # idle wait: `_publish_once` cancels it when the publish ends
            if not data:
                raise ConnectionResetError("the server closed the connection")
            for event in proto.feed(data):
                if isinstance(event, PublishStarted):
                    pass
            out = proto.data_to_send()
            if out:
                writer.write(out)

    async def _send(self, proto: ClientConnection, writer: asyncio.StreamWriter, read_task: asyncio.Task[None]) -> None:
        state = _FlvState()
        while True:
            get = asyncio.ensure_future(self.get())
            try:
                # Idle wait for the next packet (ended by the sink's `end()`; `aclose` cancels
                # it after its bound) or for the server to drop us.
                done, _ = await asyncio.wait([get, read_task], return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not get.done():  # cancelled, or the reader ended first: no orphan task
                    get.cancel()
            if read_task in done:
                await asyncio.wait([get])  # cancelled above: ends at once
                exc = read_task.exception()
                raise exc if isinstance(exc, Exception) else ConnectionResetError("the server closed the connection")
            packet = get.result()
            if packet is None:
                proto.unpublish()
                writer.write(proto.data_to_send())
                # The stream has ended: a server that cannot take the unpublish loses nothing.
                await self._last_step("unpublish", 2.0, writer.drain())
                return
            for kind, ts, payload in state.tags(packet, self._audio_skipped):
                proto.send_media(kind, ts, payload)
            data = proto.data_to_send()
            if data:
                writer.write(data)
                self.sent_packets += 1
                async with asyncio.timeout(self.send_timeout):
                    await writer.drain()

    async def _last_step(self, what: str, timeout: float, step: Awaitable[None]) -> None:
        """A connection's last socket step, bounded by `timeout`; its failure ends nothing, so it
        is logged (debug for a socket error or the bound, warning for anything unexpected)."""
        try:
            async with asyncio.timeout(timeout):
                await step
        except (OSError, TimeoutError) as exc:
            log.debug("rtmp push to %s: %s failed: %s: %s", redact(self.url), what, type(exc).__name__, exc)
        except Exception:
            log.warning("rtmp push to %s: %s failed", redact(self.url), what, exc_info=True)

    def _audio_skipped(self, codec: str) -> None:
        self.report(f"rtmp push to {redact(self.url)}: {codec} audio cannot go into FLV; audio dropped")


class _FlvState:
    """Per-connection FLV conversion: sequence headers sent, timestamp base."""

    def __init__(self) -> None:
        self.avc_config: bytes | None = None
        self.aac_config: bytes | None = None
        self.base_ms: int | None = None
        self.audio_refused = False

    def _ts(self, packet: EncodedPacket) -> int:
        ms = packet.ms
        if self.base_ms is None:
            self.base_ms = ms
        return max(0, ms - self.base_ms)

    def tags(self, packet: EncodedPacket, on_audio_skipped: Callable[[str], None]) -> list[tuple[str, int, bytes]]:
        out: list[tuple[str, int, bytes]] = []
        if packet.kind == "video":
            if packet.codec != "h264":
                return out
            nals = annexb_nals(packet.data)
            if packet.keyframe:
                sps = next((n for n in nals if n[0] & 0x1F == _NAL_SPS), None)
                pps = next((n for n in nals if n[0] & 0x1F == _NAL_PPS), None)
                if sps is not None and pps is not None:
                    config = avc_config(sps, pps)
                    if config != self.avc_config:
                        self.avc_config = config
                        out.append(("video", self._ts(packet), avc_tag(True, SEQUENCE_START, 0, config)))
            if self.avc_config is None:
                return out  # wait for the first IDR
            body = avcc_from_nals([n for n in nals if n[0] & 0x1F not in (_NAL_AUD,)])
            out.append(("video", self._ts(packet), avc_tag(packet.keyframe, CODED_FRAMES, packet.cts_ms, body)))
            return out
        if self.avc_config is None:
            return out  # audio starts with the video, so players see both from the first tag
        if packet.codec != "aac":
            if not self.audio_refused:
                self.audio_refused = True
                on_audio_skipped(packet.codec)
            return out
        asc: bytes | None  # the AudioSpecificConfig, which a copied packet may not carry
        data, asc = (adts_to_raw(packet.data) if packet.adts else (packet.data, packet.extradata))
        if asc and asc != self.aac_config:
            self.aac_config = asc
            out.append(("audio", self._ts(packet), aac_tag(True, asc)))
        if self.aac_config is None:
            return out
        out.append(("audio", self._ts(packet), aac_tag(False, data)))
        return out
