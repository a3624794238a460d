"""A live session reports how far its pipeline's load is: the status's `loading` field (what
the player shows instead of a black frame), fed by the stages the pipeline reports."""

from __future__ import annotations

import asyncio
import shutil
import threading
from typing import Any, ClassVar

from aiohttp.test_utils import TestClient, TestServer

from livestream.app import build_app
from livestream.live import LIVE_CONFIG_KEY, LIVE_REGISTRY_KEY
from livestream.protocols import RTMP_SERVER_KEY
from livestream.settings import Settings
from live_helpers import TEST_CONFIG, wait_for
from pipelines.base import LiveParams
from pipelines.live import LivePipelineSpec, default_live_registry
from pipelines.live.noop import NoopParams, NoopPipeline
from pipelines.progress import Progress

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


class SlowLoad(NoopPipeline):
    """Loads in two reported steps, the second held until the test lets it go."""

    name: ClassVar[str] = "slow-load"
    release: ClassVar[threading.Event] = threading.Event()
    #: Set by the engine before `load` (`pipelines.progress`).
    progress: Progress | None = None

    def load(self, params: LiveParams) -> None:
        assert self.progress is not None, "the engine hands its Progress to a pipeline that has the attribute"
        with self.progress.stage("compile", total=2) as stage:
            stage.advance()
            if not self.release.wait(30):
                raise RuntimeError("the test never released the load")
            stage.advance()


async def test_status_shows_loading_stage_and_progress_until_online() -> None:
    SlowLoad.release = threading.Event()
    registry = default_live_registry()
    registry.register(LivePipelineSpec("slow-load", NoopParams, SlowLoad, "reports its load"))
    app = build_app(Settings(host="127.0.0.1", rtmp_port=0, live_pipeline="slow-load", rtmp_idle_timeout=10.0))
    app[LIVE_CONFIG_KEY] = TEST_CONFIG
    app[LIVE_REGISTRY_KEY] = registry
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        url = f"rtmp://127.0.0.1:{app[RTMP_SERVER_KEY].port}/live/cam"
        publisher = await asyncio.create_subprocess_exec(
            FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=30:duration=2",
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
            "-threads", "1", "-f", "flv", url,
        )  # fmt: skip
        status: dict[str, Any] = {}

        async def loading() -> bool:
            nonlocal status
            resp = await client.get("/live/cam/status")
            status = await resp.json() if resp.status == 200 else {}
            return bool(status.get("loading"))

        await wait_for(loading)
        assert status["state"] == "LOADING"
        assert status["loading"]["stage"] == "compile" and status["loading"]["progress"] == 0.5
        assert status["loading"]["elapsed_s"] >= 0
        SlowLoad.release.set()

        async def online() -> bool:
            nonlocal status
            status = await (await client.get("/live/cam/status")).json()
            return bool(status["frames_out"])

        await wait_for(online)
        assert status["state"] != "LOADING" and status["loading"] is None
        async with asyncio.timeout(30):
            assert await publisher.wait() == 0
    finally:
        SlowLoad.release.set()
        await client.close()
