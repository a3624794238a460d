"""Headless Chromium against the engine: the player page plays a stream ffmpeg publishes over RTMP, and the
camera page publishes Chromium's fake camera over WHIP and plays the processed result back."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from livestream.live import LIVE_MANAGER_KEY, SessionConfig
from livestream.protocols import RTMP_SERVER_KEY
from livestream.settings import Settings
from livestream.webrtc import WEBRTC_HUB_KEY

from .chromium import Browser, chromium_path
from .engine_server import serve_engine

FFMPEG = shutil.which("ffmpeg")

pytestmark = [
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (make system-packages)"),
    pytest.mark.skipif(FFMPEG is None, reason="Debian's ffmpeg is not installed (make system-packages)"),
]

CONFIG = SessionConfig(status_interval=0.5, input_timeout=5.0, stop_timeout=2.0, max_queue_lag=5.0)


@pytest.fixture
async def engine() -> AsyncIterator[tuple[str, Any]]:
    settings = Settings(host="127.0.0.1", port=0, live_pipeline="color-filter", webrtc_hosts=("127.0.0.1",), rtmp_port=0)
    async with serve_engine(settings, CONFIG) as served:
        yield served


async def _advancing(page: Any, state: str, seconds: float = 1.0) -> int:
    before = await page.eval(f"{state}.frames")
    await asyncio.sleep(seconds)
    return int(await page.eval(f"{state}.frames")) - int(before)


async def test_player_and_camera_pages(engine) -> None:
    base, app = engine
    manager = app[LIVE_MANAGER_KEY]
    async with Browser() as browser:
        # A stream published with Debian's ffmpeg over RTMP, watched on the player page.
        rtmp = app[RTMP_SERVER_KEY]
        ffmpeg = await asyncio.create_subprocess_exec(
            FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=256x256:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
            "-threads", "1", "-c:a", "aac", "-t", "60",
            "-f", "flv", f"rtmp://127.0.0.1:{rtmp.port}/live/show",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(20):
            while manager.get("show") is None or not manager.get("show").frames_out:
                await asyncio.sleep(0.05)
        assert manager.get("show").ingest.name == "rtmp"
        player = await browser.open(f"{base}/live/show")
        await player.wait_for("window.playerState && playerState.frames > 5", timeout=20)
        assert await _advancing(player, "playerState", 2.0) >= 10  # frames advance (rVFC)
        assert await player.eval("brightness(document.getElementById('video'))") > 20  # not black
        await player.wait_for("playerState.status && playerState.status.state", timeout=5)
        # Chromium offers VP8 first; the engine still answers with the shared H.264 encode.
        hub = app[WEBRTC_HUB_KEY]
        assert [r.codec for r in hub.resources("show") if r.kind == "whep"] == ["H264"]
        # The param controls post to /live/{stream}/params: invert the picture from the page.
        await player.wait_for("!!document.querySelector('#params input[name=invert]')", timeout=10)
        before = await player.eval("brightness(document.getElementById('video'))")
        await player.eval(
            "(() => { const i = document.querySelector('#params input[name=invert]');"
            " i.checked = true; i.dispatchEvent(new Event('change')); return true; })()"
        )
        async with asyncio.timeout(10):
            while not manager.get("show").params.invert:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        after = await player.eval("brightness(document.getElementById('video'))")
        assert abs((255 - before) - after) < 40, (before, after)  # the picture shown is inverted
        await player.close()
        ffmpeg.terminate()
        await ffmpeg.wait()

        # The camera page: Chromium's fake camera over WHIP, the processed stream over WHEP.
        page = await browser.open(f"{base}/live/selfie/publish?autostart=1")
        await page.wait_for("window.publishState && publishState.playing", timeout=30)
        await page.wait_for("publishState.frames > 5", timeout=20)
        # Frames advance (fewer than 30 fps while Chromium, ffmpeg and the engine share 2 cores).
        assert await _advancing(page, "publishState", 2.0) >= 6
        assert await page.eval("brightness(document.getElementById('output'))") > 20
        session = manager.get("selfie")
        assert session is not None and session.ingest.name == "whip"
        assert session.ingest.video_frames > 10
        # 640x480 from the fake camera; Chromium may scale it down while the cores are busy.
        assert session.status(for_api=True)["width"] in (640, 480, 320)
        await page.close()
