"""Synthetic WebRTC media for tests and benchmarks: numbered frames as a track, and a shared
H.264 encoder thread feeding a `PacketFanout` (the stand-in for a session's encode)."""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction

import av
from aiortc import MediaStreamTrack
from av.video.frame import PictureType

from ..live.testsrc import draw_frame
from .tracks import PacketFanout

__all__ = ["NumberedVideoTrack", "SharedH264Source"]

_VIDEO_TIME_BASE = Fraction(1, 90000)


class NumberedVideoTrack(MediaStreamTrack):
    """Frames with their number drawn (`live.testsrc.draw_frame`), paced at `fps`.

    `sent[n]` is the wall-clock time (time.time()) frame `n` was handed to the sender.
    """

    kind = "video"

    def __init__(self, width: int = 128, height: int = 128, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.count = 0
        self._start: float | None = None
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        n = self.count
        due = self._start + n / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(draw_frame(n, self.width, self.height), format="rgb24")
        frame.pts = round(n * 90000 / self.fps)
        frame.time_base = _VIDEO_TIME_BASE
        self.sent[n] = time.time()
        self.count += 1
        return frame


class SharedH264Source:
    """One libx264 encode (constrained baseline, zerolatency) of numbered frames in a thread,
    published to a `PacketFanout`; honours keyframe requests. `encoded` counts frames."""

    def __init__(
        self, fanout: PacketFanout, *, width: int = 128, height: int = 128, fps: int = 30, gop: int = 60
    ) -> None:
        self.fanout = fanout
        self.gop = gop
        fanout.on_keyframe = self.request_keyframe
        self.width, self.height, self.fps = width, height, fps
        self.encoded = 0
        self.keyframes = 0
        self._key = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def request_keyframe(self) -> None:
        self._key = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webrtc-testsrc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = self.width, self.height, "yuv420p"
        codec.time_base = _VIDEO_TIME_BASE
        codec.framerate = Fraction(self.fps)
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "forced-idr": "1",
            "g": str(self.gop),
            "bf": "0",
            "threads": "1",
        }
        codec.bit_rate = 600_000
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = start + n / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            frame = av.VideoFrame.from_ndarray(draw_frame(n, self.width, self.height), format="rgb24")
            frame.pts = round(n * 90000 / self.fps)
            frame.time_base = _VIDEO_TIME_BASE
            if self._key or n == 0:
                self._key = False
                frame.pict_type = PictureType.I
            for packet in codec.encode(frame):
                packet.time_base = _VIDEO_TIME_BASE
                if packet.is_keyframe:
                    self.keyframes += 1
                self.fanout.publish_threadsafe(packet)
            self.encoded += 1
            n += 1
