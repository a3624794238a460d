"""Helpers for the RTMP tests: a numbered source file, ffmpeg publishers, a raw RTMP client."""

from __future__ import annotations

import asyncio
import shutil
import socket
from fractions import Fraction
from pathlib import Path

from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiohttp.test_utils import TestClient

from livestream.live import SessionConfig
from livestream.live.testsrc import draw_frame, read_number
from livestream.rtmp import RtmpServer
from livestream.rtmp.protocol import ClientConnection, split_rtmp_url

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"

RTMP_TEST_CONFIG = SessionConfig(
    status_interval=0.5, input_timeout=3.0, stop_timeout=3.0, max_queue_lag=5.0, max_queue_frames=256
)
Engine = tuple[TestClient[Any, Any], RtmpServer]
EngineFactory = Callable[..., Awaitable[Engine]]


def make_numbered_source(path: Path, frames: int, size: int = 128, fps: int = 30) -> Path:
    """A lossless (FFV1) file whose frames show their numbers (`testsrc.draw_frame`)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(draw_frame(i, size, size), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def obs_like_args(source: str | Path, url: str, *, realtime: bool = True, audio: str = "sine", extra: list[str] | None = None) -> list[str]:
    """ffmpeg publishing like OBS: x264 zerolatency, 2 s keyframes, AAC 48 kHz stereo."""
    audio_src = "anullsrc=r=48000:cl=stereo" if audio == "silent" else "sine=frequency=440:sample_rate=48000"
    return [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
        *(["-re"] if realtime else []),
        "-i", str(source),
        "-f", "lavfi", "-i", audio_src,
        "-shortest", "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", "-keyint_min", "60",
        "-pix_fmt", "yuv420p", "-b:v", "800k", "-threads", "1",
        "-c:a", "aac", "-b:a", "160k", "-ac", "2",
        *(extra or []),
        "-f", "flv", url,
    ]  # fmt: skip


async def run_ffmpeg(args: list[str], timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, err.decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flv_numbers(path: Path) -> tuple[list[int], int]:
    """Frame numbers drawn in a recorded FLV's video, and its audio frame count."""
    numbers, audio = [], 0
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                numbers.append(read_number(frame.to_ndarray(format="rgb24")))
            else:
                audio += 1
    return numbers, audio


class RawPublisher:
    """A scripted RTMP publisher (our own client protocol) for misbehaving-client tests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.proto: ClientConnection | None = None

    async def open(self) -> None:
        host, port, _, _, _ = split_rtmp_url(self.url)
        self.reader, self.writer = await asyncio.open_connection(host, port)

    async def publish(self, timeout: float = 5.0) -> None:
        """Handshake, connect, createStream, publish; raises ProtocolError when refused."""
        _, _, app, name, tc_url = split_rtmp_url(self.url)
        await self.open()
        assert self.reader is not None and self.writer is not None
        proto = self.proto = ClientConnection(app, name, tc_url)
        self.writer.write(proto.data_to_send())
        async with asyncio.timeout(timeout):
            while not proto.published:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("closed by the server")
                proto.feed(data)
                self.writer.write(proto.data_to_send())

    def send(self, kind: str, timestamp: int, payload: bytes) -> None:
        assert self.proto is not None and self.writer is not None
        self.proto.send_media(kind, timestamp, payload)
        self.writer.write(self.proto.data_to_send())

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        assert self.reader is not None
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
