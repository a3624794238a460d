"""Minimal WHIP/WHEP clients on aiortc (examples, tests, benchmarks).

    async with aiohttp.ClientSession() as http:
        viewer = await WhepClient.connect(http, "http://127.0.0.1:8000/live/demo/whep")
        frame = await viewer.video.recv()          # av.VideoFrame
        await viewer.close()                       # DELETE + close

        publisher = await WhipClient.connect(http, url, video_track, token="secret")
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urljoin

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

__all__ = ["WhepClient", "WhipClient", "WebRTCClientError"]


class WebRTCClientError(Exception):
    """The server refused the offer: `status` and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class _Client:
    def __init__(self, http: aiohttp.ClientSession, pc: RTCPeerConnection) -> None:
        self.http = http
        self.pc = pc
        self.location: str | None = None
        self.answer = ""
        self._headers: dict[str, str] = {}

    async def _negotiate(self, url: str, token: str | None) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        async with self.http.post(
            url,
            data=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", **self._headers},
        ) as resp:
            text = await resp.text()
            if resp.status != 201:
                await self.pc.close()
                raise WebRTCClientError(resp.status, text)
            self.location = urljoin(url, resp.headers["Location"])
        self.answer = text
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

    async def close(self, *, delete: bool = True) -> None:
        """DELETE the resource (unless `delete` is False: a client that vanishes) and close."""
        if delete and self.location is not None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.http.delete(self.location, headers=self._headers):
                    pass
            self.location = None
        await self.pc.close()


class WhepClient(_Client):
    """Plays a stream: `video` (and `audio` when asked for) are the received tracks."""

    video: MediaStreamTrack
    audio: MediaStreamTrack | None = None

    @classmethod
    async def connect(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        *,
        audio: bool = False,
        codec: str = "",
        token: str | None = None,
        config: RTCConfiguration | None = None,
    ) -> WhepClient:
        """`codec`: "H264" or "VP8" to offer only that codec (default: aiortc's list)."""
        pc = RTCPeerConnection(config or RTCConfiguration(iceServers=[]))
        client = cls(http, pc)
        transceiver = pc.addTransceiver("video", direction="recvonly")
        if codec:
            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in (f"video/{codec.lower()}", "video/rtx")]
            )
        audio_transceiver = pc.addTransceiver("audio", direction="recvonly") if audio else None
        await client._negotiate(url, token)
        # aiortc creates the receiving tracks with the remote description.
        client.video = transceiver.receiver.track
        if audio_transceiver is not None:
            client.audio = audio_transceiver.receiver.track
        return client


class WhipClient(_Client):
    """Publishes `video` (and `audio`) tracks to a stream."""

    @classmethod
    async def connect(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        video: MediaStreamTrack,
        *,
        audio: MediaStreamTrack | None = None,
        codec: str = "",
        token: str | None = None,
        config: RTCConfiguration | None = None,
    ) -> WhipClient:
        pc = RTCPeerConnection(config or RTCConfiguration(iceServers=[]))
        client = cls(http, pc)
        transceiver = pc.addTransceiver(video, direction="sendonly")
        if codec:
            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in (f"video/{codec.lower()}", "video/rtx")]
            )
        if audio is not None:
            pc.addTransceiver(audio, direction="sendonly")
        await client._negotiate(url, token)
        return client
