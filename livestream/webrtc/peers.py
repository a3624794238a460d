"""WHEP viewers and WHIP publishers: one aiortc peer connection per HTTP resource (RFC 9725).

    POST   /live/{stream}/whep|whip        offer → 201, answer, Location: /live/{stream}/whep|whip/{id}
    PATCH  /live/{stream}/whep|whip/{id}   trickle ICE (application/trickle-ice-sdpfrag) → 204
    DELETE /live/{stream}/whep|whip/{id}   the peer connection closes → 200

The `WebRTCHub` owns every resource; the engine (or a test) tells it where a stream's output
comes from and where a publisher's frames go through a `StreamDirectory`. A resource closes on
DELETE, when its connection fails or closes (a browser tab that goes away sends a DTLS close;
one that vanishes silently fails ICE consent after ~30 s), when it never connects within
`connect_timeout`, or when its stream ends. One resource failing touches nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError

from ..errors import SessionLimitError, StreamBusyError

from .ice import IceConfig, rewrite_host_candidates
from .sdp import OfferError, OfferInfo, SdpFragment, add_bitrate_hints, check_offer
from .tracks import AudioFanout, DecodingTrack, PacketFanout, attach_sender

__all__ = [
    "Playback",
    "Publisher",
    "Resource",
    "StreamDirectory",
    "StreamNotFound",
    "WebRTCHub",
]

log = logging.getLogger(__name__)


class StreamNotFound(LookupError):
    """No live stream by that name (404)."""


@dataclass
class Playback:
    """A stream's output as viewers get it: the shared encode and its audio."""

    video: PacketFanout
    audio: AudioFanout | None = None


class Publisher(Protocol):
    """Where a WHIP publisher's decoded frames go (a session's ingest)."""

    def put_video(self, frame: av.VideoFrame) -> None: ...

    def put_audio(self, frame: av.AudioFrame) -> None: ...

    def end(self, reason: str, *, failed: bool = False) -> None:
        """The publisher left (`failed`: its connection failed): the input has ended."""


class StreamDirectory(Protocol):
    """The engine side of the hub: streams to play, streams to publish into."""

    async def playback(self, stream: str) -> Playback:
        """The stream's output; raises `StreamNotFound`."""

    async def publish(self, stream: str) -> Publisher:
        """Start (or join) the stream `stream` with a WHIP input; may raise `ResourceConflict`."""


@dataclass
class Resource:
    """One WHIP or WHEP resource: its peer connection and what it is attached to."""

    id: str
    kind: str  # "whep" or "whip"
    stream: str
    pc: RTCPeerConnection
    offer: OfferInfo
    etag: str
    created: float = field(default_factory=time.monotonic)
    connected: float | None = None
    codec: str = ""
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    publisher: Publisher | None = None
    fanout: PacketFanout | None = None
    closed: bool = False
    close_reason: str = ""

    @property
    def path(self) -> str:
        return f"/live/{self.stream}/{self.kind}/{self.id}"

    def status(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "codec": self.codec,
            "state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created, 1),
        }
        for track in self.tracks:
            for name in ("packets", "dropped", "resyncs"):
                if hasattr(track, name):
                    figures[f"{track.kind}_{name}"] = getattr(track, name)
        return figures


class WebRTCHub:
    """Every WHIP/WHEP resource of the engine."""

    def __init__(
        self,
        directory: StreamDirectory,
        ice: IceConfig | None = None,
        *,
        connect_timeout: float = 20.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.directory = directory
        self.ice = ice or IceConfig()
        self.connect_timeout = connect_timeout
        #: Bounds a resource's close: the peer connection's `close()`, then its tasks' ends.
        self.close_timeout = close_timeout
        self._resources: dict[str, Resource] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False

    # --- queries --------------------------------------------------------------------------

    def get(self, stream: str, kind: str, resource_id: str) -> Resource | None:
        r = self._resources.get(resource_id)
        return r if r is not None and r.stream == stream and r.kind == kind else None

    def resources(self, stream: str | None = None) -> list[Resource]:
        return [r for r in self._resources.values() if stream is None or r.stream == stream]

    def stream_status(self, stream: str) -> dict[str, Any]:
        items = self.resources(stream)
        return {
            "viewers": sum(1 for r in items if r.kind == "whep"),
            "publishers": sum(1 for r in items if r.kind == "whip"),
            "peers": [r.status() for r in items],
        }

    # --- WHEP -----------------------------------------------------------------------------

    async def play(self, stream: str, offer_sdp: str) -> tuple[Resource, str]:
        """Answer a WHEP offer; raises `OfferError` or `StreamNotFound`."""
        info = check_offer(offer_sdp, publishing=False)
        playback = await self.directory.playback(stream)
        if playback.video.closed:
            raise StreamNotFound(f"The live stream {stream!r} has ended.")
        pc = self._new_pc()
        resource = self._register("whep", stream, pc, info)
        resource.fanout = playback.video
        try:
            packets = playback.video.track()
            resource.tracks.append(packets)
            if info.h264:
                resource.codec = "H264"
                transceiver = pc.addTransceiver(packets, direction="sendonly")
                _prefer(transceiver, "video/H264")
                attach_sender(transceiver.sender, packets)
            else:
                # No H.264 in the offer: this viewer alone gets aiortc's VP8 of the decoded output.
                resource.codec = "VP8"
                decoded = DecodingTrack(packets)
                resource.tracks.append(decoded)
                transceiver = pc.addTransceiver(decoded, direction="sendonly")
                _prefer(transceiver, "video/VP8")
            if info.audio and playback.audio is not None:
                audio = playback.audio.track()
                resource.tracks.append(audio)
                transceiver = pc.addTransceiver(audio, direction="sendonly")
                _prefer(transceiver, "audio/opus")
            answer = await self._answer(pc, offer_sdp)
        except BaseException:
            await self._close(resource, "offer failed")
            raise
        log.info("whep %s: viewer %s joined (%s)", stream, resource.id, resource.codec)
        return resource, answer

    # --- WHIP -----------------------------------------------------------------------------

    async def publish(self, stream: str, offer_sdp: str) -> tuple[Resource, str]:
        """Answer a WHIP offer; the stream's input becomes this peer's media."""
        info = check_offer(offer_sdp, publishing=True)
        if any(r.kind == "whip" and r.stream == stream for r in self._resources.values()):
            raise StreamBusyError(f"The live stream {stream!r} already has a WHIP publisher.")
        pc = self._new_pc()
        resource = self._register("whip", stream, pc, info)
        resource.codec = "H264" if info.h264 else "VP8"
        try:
            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                resource.tracks.append(track)
                resource.tasks.append(
                    asyncio.create_task(self._pull(resource, track), name=f"whip-{stream}-{track.kind}")
                )

            for kind in ("video", "audio") if info.audio else ("video",):
                pc.addTransceiver(kind, direction="recvonly")
            resource.publisher = await self.directory.publish(stream)
            answer = add_bitrate_hints(await self._answer(pc, offer_sdp))
        except BaseException:
            await self._close(resource, "offer failed")
            raise
        log.info("whip %s: publisher %s connected its offer (%s)", stream, resource.id, resource.codec)
        return resource, answer

    async def _pull(self, resource: Resource, track: MediaStreamTrack) -> None:
        """A publisher's track → the stream's input (aiortc decodes in its own thread)."""
        while True:
            try:
                frame = await track.recv()  # idle wait: `_close` cancels it, the pc's close ends the track
            except MediaStreamError:
                break
            publisher = resource.publisher
            if publisher is None:
                continue  # the answer is still on its way
            if isinstance(frame, av.VideoFrame):
                publisher.put_video(frame)
            elif isinstance(frame, av.AudioFrame):
                publisher.put_audio(frame)
        if track.kind == "video" and not resource.closed:
            await self._close(resource, "publisher's video ended")

    # --- trickle and delete ---------------------------------------------------------------

    async def trickle(self, resource: Resource, frag: SdpFragment) -> None:
        """Add the fragment's candidates (RFC 8840); an ICE restart is refused (`OfferError`)."""
        if frag.ice_ufrag is not None and frag.ice_ufrag != resource.offer.ice_ufrag:
            raise OfferError("ICE restarts are not supported: create a new session instead.")
        # With BUNDLE every candidate belongs to the bundle's transport, whatever mid the
        # client put it under; aiortc ignores candidates for a bundled transceiver.
        primary = resource.offer.transport_mid
        for candidate in frag.candidates:
            if primary is not None:
                candidate.sdpMid = primary
            await resource.pc.addIceCandidate(candidate)
        if frag.end_of_candidates:
            await resource.pc.addIceCandidate(None)

    async def delete(self, resource: Resource) -> None:
        await self._close(resource, "deleted by the client")

    async def close_stream(self, stream: str, reason: str = "stream ended", *, kind: str | None = None) -> None:
        """Close every resource (of `kind`, if given) of a stream (it ended)."""
        items = [r for r in self.resources(stream) if kind is None or r.kind == kind]
        await asyncio.gather(*(self._close(r, reason) for r in items))

    async def close_viewers(self, video: PacketFanout, reason: str) -> None:
        """Close the WHEP resources playing `video` (its session ended)."""
        items = [r for r in self._resources.values() if r.kind == "whep" and r.fanout is video]
        await asyncio.gather(*(self._close(r, reason) for r in items))

    def close_stream_soon(self, stream: str, reason: str = "stream ended", *, kind: str | None = None) -> None:
        """`close_stream` from synchronous code; the hub owns the task."""
        task = asyncio.get_running_loop().create_task(self.close_stream(stream, reason, kind=kind))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Close everything (engine shutdown). Idempotent."""
        self._closing = True
        await asyncio.gather(*(self._close(r, "engine shutting down") for r in list(self._resources.values())))
        if self._background:
            _, pending = await asyncio.wait(list(self._background), timeout=5)
            for task in pending:
                log.warning("webrtc: %s still running 5 s into shutdown; cancelled", task.get_name())
                task.cancel()

    # --- internals ------------------------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        if self._closing:
            raise SessionLimitError("The engine is shutting down.")
        return RTCPeerConnection(self.ice.rtc_configuration())

    def _register(self, kind: str, stream: str, pc: RTCPeerConnection, info: OfferInfo) -> Resource:
        rid = secrets.token_urlsafe(12)
        resource = Resource(rid, kind, stream, pc, info, etag=f'"{secrets.token_hex(8)}"')
        self._resources[rid] = resource

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            log.debug("%s %s: connectionState %s", kind, rid, state)
            if state == "connected" and resource.connected is None:
                resource.connected = time.monotonic()
            elif state in ("failed", "closed") and not resource.closed:
                await self._close(resource, f"connection {state}", failed=state == "failed")

        resource.tasks.append(asyncio.create_task(self._connect_deadline(resource), name=f"{kind}-{rid}-deadline"))
        return resource

    async def _connect_deadline(self, resource: Resource) -> None:
        await asyncio.sleep(self.connect_timeout)
        if resource.connected is None and not resource.closed:
            log.info("%s %s: not connected after %.0f s; closing", resource.kind, resource.id, self.connect_timeout)
            await self._close(resource, "never connected")

    async def _answer(self, pc: RTCPeerConnection, offer_sdp: str) -> str:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, KeyError) as exc:
            raise OfferError(f"The offer cannot be negotiated: {exc}") from None
        except (InvalidStateError, InvalidAccessError, OperationError) as exc:  # e.g. no common codec
            raise OfferError(f"The offer cannot be negotiated: {exc}") from None
        # aiortc gathers every candidate here (no trickle of its own); with no STUN/TURN
        # configured this takes milliseconds.
        await pc.setLocalDescription(await pc.createAnswer())
        return rewrite_host_candidates(pc.localDescription.sdp, self.ice.advertised_hosts)

    async def _close(self, resource: Resource, reason: str, *, failed: bool = False) -> None:
        if resource.closed:
            return
        resource.closed = True
        resource.close_reason = reason
        self._resources.pop(resource.id, None)
        log.info("%s %s (%s): closed: %s", resource.kind, resource.id, resource.stream, reason)
        for track in resource.tracks:
            track.stop()
        current = asyncio.current_task()
        others = [task for task in resource.tasks if task is not current]
        for task in others:
            task.cancel()
        try:
            async with asyncio.timeout(self.close_timeout):
                await resource.pc.close()
        except TimeoutError:
            log.warning("%s %s: the peer connection did not close within %g s; moving on", resource.kind, resource.id, self.close_timeout)
        except Exception:
            # A transport that is already broken (the reason we are closing, often) may raise here.
            log.debug("%s %s: closing the peer connection failed", resource.kind, resource.id, exc_info=True)
        if others:
            done, pending = await asyncio.wait(others, timeout=self.close_timeout)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.debug("%s %s: task %s failed", resource.kind, resource.id, task.get_name(), exc_info=task.exception())
            for task in pending:
                log.warning("%s %s: task %s did not end within %g s of its cancel", resource.kind, resource.id, task.get_name(), self.close_timeout)
        if resource.publisher is not None:
            resource.publisher.end(f"WHIP publisher left: {reason}", failed=failed)


def _prefer(transceiver: Any, mime: str) -> None:
    """Negotiate `mime` (and its RTX) on this transceiver, whatever the offer's order."""
    kind = mime.split("/")[0]
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    wanted = [c for c in codecs if c.mimeType.lower() == mime.lower()]
    if kind == "video":
        wanted += [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(wanted)
