"""An OBS-like RTMP publish (made and pushed by the ffmpeg binary: x264 veryfast with B-frames,
2 s keyframes, AAC 48 kHz stereo at 160 kb/s) through the engine and pushed out over RTMP into
`ffmpeg -listen`, checked as a viewer would: every frame, all the audio, beep in step with flash
(`tests/ffmpeg_inputs.py` for the source and the tolerances)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ffmpeg_inputs import AvSource, make_flv, measure, viewer_problems
from rtmp_helpers import FFMPEG, Engine, free_port, run_ffmpeg


async def _ended(client: Any, stream: str, timeout: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            resp = await client.get(f"/live/{stream}/status")
            if resp.status == 200 and (status := await resp.json()).get("final"):
                return status
            await asyncio.sleep(0.1)


async def test_obs_like_publish_keeps_all_audio_in_sync(rtmp_engine: Engine, tmp_path: Path) -> None:
    client, server = rtmp_engine
    src = AvSource(codec="aac", rate=48000, channels=2, gop=60, audio_bitrate="160k")
    source = make_flv(src, tmp_path / "obs.flv")
    inp = measure(source)
    assert inp.video_frames == 120 and inp.sync is not None and abs(inp.sync) < 0.002, inp.describe()

    out_port, out_file = free_port(), tmp_path / "out.flv"
    listener = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-listen", "1", "-timeout", "20",
        "-i", f"rtmp://127.0.0.1:{out_port}/out/key", "-c", "copy", "-f", "flv", str(out_file),
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)
        resp = await client.post("/live/obs", json={"rtmp_output": f"rtmp://127.0.0.1:{out_port}/out/key"})
        assert resp.status == 200, await resp.text()
        rc, err = await run_ffmpeg(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(source), "-c", "copy",
             "-f", "flv", f"rtmp://127.0.0.1:{server.port}/live/obs"]
        )  # fmt: skip
        assert rc == 0, err
        status = await _ended(client, "obs")
        assert status["error"] is None and status["end_reason"] == "input ended", status
        assert await asyncio.wait_for(listener.wait(), 20) == 0
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()

    result = measure(out_file)
    found = viewer_problems(inp, result, source_seconds=src.seconds)
    assert not found, "; ".join(found) + f"\n  in:  {inp.describe()}\n  out: {result.describe()}"
