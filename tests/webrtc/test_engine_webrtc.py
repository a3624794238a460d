"""WHIP in, live session (noop), WHEP out, through the whole engine app, with aiortc peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from livestream.live import LIVE_MANAGER_KEY, SessionConfig
from livestream.live.testsrc import read_number
from livestream.settings import Settings
from livestream.webrtc import WEBRTC_HUB_KEY
from livestream.webrtc.client import WebRTCClientError, WhepClient, WhipClient
from livestream.webrtc.testsrc import NumberedVideoTrack

from .engine_server import serve_engine

CONFIG = SessionConfig(status_interval=0.5, input_timeout=3.0, stop_timeout=2.0, max_queue_lag=5.0)


@pytest.fixture
async def engine() -> AsyncIterator[tuple[str, Any]]:
    settings = Settings(host="127.0.0.1", port=0, live_pipeline="noop", webrtc_hosts=("127.0.0.1",))
    async with serve_engine(settings, CONFIG) as served:
        yield served


async def _numbers(track: Any, count: int, timeout: float = 20.0) -> list[int]:
    out: list[int] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            frame = await track.recv()
            out.append(read_number(frame.to_ndarray(format="rgb24")))
    return out


async def _wait(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_whip_to_whep_in_order_three_viewers_one_encode(engine) -> None:
    base, app = engine
    manager = app[LIVE_MANAGER_KEY]
    async with aiohttp.ClientSession() as http:
        camera = NumberedVideoTrack(128, 128)
        publisher = await WhipClient.connect(http, f"{base}/live/cam/whip", camera)
        await _wait(lambda: manager.get("cam") is not None and manager.get("cam").frames_out > 0)
        session = manager.get("cam")
        assert session.ingest.name == "whip"
        viewers = [await WhepClient.connect(http, f"{base}/live/cam/whep") for _ in range(3)]
        results = await asyncio.gather(*(_numbers(v.video, 15) for v in viewers))
        for numbers in results:
            assert numbers == sorted(numbers), numbers
            assert len(set(numbers)) == len(numbers)
            assert camera.count - numbers[-1] < 45  # live, not replayed from the start
        status = session.status(for_api=True)
        (whep,) = [o for o in status["outputs"] if o["name"] == "whep-cam"]
        assert whep["viewers"] == 3
        # One encode for every viewer: the encoder produced one packet per frame it took.
        assert session.frames_out <= session.frames_in
        assert whep["packets"] <= session.frames_out
        # A viewer that vanishes (no DELETE) is cleaned up; the others play on.
        await viewers[0].close(delete=False)
        hub = app[WEBRTC_HUB_KEY]
        await _wait(lambda: len([r for r in hub.resources("cam") if r.kind == "whep"]) == 2)
        more = await _numbers(viewers[1].video, 5)
        assert more == sorted(more)
        # The publisher vanishes (no DELETE): the stream ends, its viewers are closed.
        await publisher.close(delete=False)
        await _wait(lambda: manager.get("cam") is None, timeout=15)
        await _wait(lambda: hub.resources("cam") == [])
        async with http.get(f"{base}/live/cam/status") as resp:
            final = await resp.json()
        assert final["final"] is True and final["ingest"]["kind"] == "whip"
        for v in viewers[1:]:
            await v.close()


async def test_audio_reaches_viewers_as_opus(engine) -> None:
    import fractions

    import av
    import numpy as np
    from aiortc import MediaStreamTrack

    class Tone(MediaStreamTrack):
        """A 440 Hz tone in 20 ms frames, paced (aiortc's AudioStreamTrack is silence)."""

        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.samples = 0
            self.start: float | None = None

        async def recv(self) -> av.AudioFrame:  # type: ignore[override]
            loop = asyncio.get_running_loop()
            if self.start is None:
                self.start = loop.time()
            delay = self.start + self.samples / 48000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t = (np.arange(self.samples, self.samples + 960) / 48000.0).astype(np.float32)
            pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts, frame.time_base = self.samples, fractions.Fraction(1, 48000)
            self.samples += 960
            return frame

    base, app = engine
    manager = app[LIVE_MANAGER_KEY]
    async with aiohttp.ClientSession() as http:
        publisher = await WhipClient.connect(
            http, f"{base}/live/tone/whip", NumberedVideoTrack(128, 128), audio=Tone()
        )
        await _wait(lambda: manager.get("tone") is not None and manager.get("tone").frames_out > 0)
        viewer = await WhepClient.connect(http, f"{base}/live/tone/whep", audio=True)
        assert viewer.audio is not None
        loud = 0
        async with asyncio.timeout(20):
            while loud < 10:
                frame = await viewer.audio.recv()
                if np.abs(frame.to_ndarray().astype(np.int32)).max() > 1000:
                    loud += 1  # the tone, through WHIP Opus -> AAC -> Opus
        await _numbers(viewer.video, 3)
        assert manager.get("tone").ingest.audio_frames > 0
        await viewer.close()
        await publisher.close()
