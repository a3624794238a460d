"""Recording (`livestream.egress.recording`) end to end: ffmpeg publishes over RTMP, the engine
records the processed output to fragmented MP4, and ffprobe/ffmpeg read what was written:
the whole file, a copy cut short (a crash), and a recording whose disk fills up."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import EngineFactory
from live_helpers import wait_for

from livestream.egress import PacketSink
from livestream.egress.recording import Recording, RecordingError, RecordingSink, Recordings
from livestream.live import LIVE_MANAGER_KEY
from livestream.protocols import RTMP_SERVER_KEY
from livestream.settings import Settings

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
FPS = 30


def _publish_args(url: str, seconds: float, *, realtime: bool) -> list[str]:
    """ffmpeg publishing like OBS (x264 zerolatency, 1 s keyframes, AAC stereo)."""
    return [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", *(["-re"] if realtime else []),
        "-f", "lavfi", "-i", f"testsrc2=size=128x128:rate={FPS}:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(FPS), "-pix_fmt", "yuv420p",
        "-threads", "1", "-c:a", "aac", "-b:a", "96k", "-ac", "2", "-f", "flv", url,
    ]  # fmt: skip


async def _run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def _probe(path: Path) -> dict[str, Any]:
    """ffprobe's streams (with decoded frame counts) and format of `path`."""
    rc, out, err = await _run(
        FFPROBE, "-v", "error", "-count_frames", "-show_entries",
        "format=duration,format_name:stream=codec_type,codec_name,nb_read_frames,width,height,sample_rate",
        "-of", "json", str(path),
    )  # fmt: skip
    assert rc == 0, err
    return dict(json.loads(out))


async def _engine(engine_factory: EngineFactory, folder: Path, **settings: Any) -> tuple[TestClient[Any, Any], int]:
    base: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "rtmp_port": 0, "live_pipeline": "noop"}
    client = await engine_factory(Settings(**(base | {"recordings_dir": folder} | settings)))
    return client, client.app[RTMP_SERVER_KEY].port


async def _final_status(client: TestClient[Any, Any], stream: str) -> dict[str, Any]:
    status: dict[str, Any] = {}

    async def ended() -> bool:
        nonlocal status
        resp = await client.get(f"/live/{stream}/status")
        status = await resp.json() if resp.status == 200 else {}
        return bool(status.get("final"))

    await wait_for(ended)
    return status


async def test_record_every_stream_gives_a_playable_mp4_even_cut_short(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """`--record DIR`: the whole stream is in one MP4 with the right codecs, frames and
    duration; the listing's URL serves it; a copy cut at 60% (a crash) still decodes."""
    folder = tmp_path / "recs"
    client, port = await _engine(engine_factory, folder, record_direct=True)
    seconds = 3
    rc, _, err = await _run(*_publish_args(f"rtmp://127.0.0.1:{port}/live/cam", seconds, realtime=False))
    assert rc == 0, err
    status = await _final_status(client, "cam")
    assert status["error"] is None and status["frames_out"] == seconds * FPS

    async def finished() -> bool:
        listing = await (await client.get("/live/cam/recordings")).json()
        return bool(listing) and listing[0]["ended"] is not None

    await wait_for(finished)
    [entry] = await (await client.get("/live/cam/recordings")).json()
    path = Path(entry["path"])
    assert path.is_absolute() and path.parent == folder.resolve() and path.suffix == ".mp4"
    assert entry["bytes"] == path.stat().st_size > 0 and entry["started"] <= entry["ended"]
    assert entry["error"] is None and entry["url"].startswith("http://127.0.0.1:")
    resp = await client.session.get(entry["url"])
    assert resp.status == 200 and resp.content_type == "video/mp4"
    assert await resp.read() == path.read_bytes()

    probe = await _probe(path)
    assert "mp4" in probe["format"]["format_name"]
    assert abs(float(probe["format"]["duration"]) - seconds) < 0.15
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert streams["video"]["codec_name"] == "h264" and int(streams["video"]["nb_read_frames"]) == seconds * FPS
    assert (streams["video"]["width"], streams["video"]["height"]) == (128, 128)
    assert streams["audio"]["codec_name"] == "aac" and streams["audio"]["sample_rate"] == "48000"
    assert int(streams["audio"]["nb_read_frames"]) > seconds * 40  # ~47 AAC frames a second

    cut = tmp_path / "cut.mp4"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    rc, _, err = await _run(FFMPEG, "-v", "error", "-i", str(cut), "-f", "null", "-")
    assert rc == 0, err
    probe = await _probe(cut)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert FPS // 2 <= int(video["nb_read_frames"]) < seconds * FPS  # whole fragments up to the cut


async def test_record_api_starts_stops_and_lists(engine_factory: EngineFactory, tmp_path: Path) -> None:
    """POST starts (201; 409 twice), DELETE stops (the file is finished at once), GET lists it."""
    client, port = await _engine(engine_factory, tmp_path)
    assert (await client.post("/live/cam/record")).status == 404  # not live yet
    publisher = asyncio.create_task(_run(*_publish_args(f"rtmp://127.0.0.1:{port}/live/cam", 3, realtime=True)))
    manager = client.app[LIVE_MANAGER_KEY]

    async def producing() -> bool:
        session = manager.get("cam")
        return session is not None and session.frames_out > 0

    await wait_for(producing)
    resp = await client.post("/live/cam/record")
    assert resp.status == 201, await resp.text()
    started = await resp.json()
    assert started["ended"] is None and started["recording"] is True
    again = await client.post("/live/cam/record")
    assert again.status == 409 and "already being recorded" in (await again.json())["detail"]["msg"]
    session = manager.get("cam")
    assert session is not None
    await wait_for(lambda: session.frames_out > 30)  # about a second more is recorded
    resp = await client.delete("/live/cam/record")
    assert resp.status == 200, await resp.text()
    stopped = await resp.json()
    assert stopped["path"] == started["path"] and stopped["ended"] is not None and stopped["bytes"] > 0
    assert (await client.delete("/live/cam/record")).status == 404
    probe = await _probe(Path(stopped["path"]))
    kinds = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
    assert kinds == {"video": "h264", "audio": "aac"}
    assert 0.5 < float(probe["format"]["duration"]) < 4.5
    rc, _, err = await publisher
    assert rc == 0, err
    status = await _final_status(client, "cam")
    assert status["error"] is None
    listing = await (await client.get("/live/cam/recordings")).json()
    assert [e["path"] for e in listing] == [started["path"]]
    assert (await client.get("/live/other/recordings")).status == 200
    missing = await client.get("/live/cam/recordings/nope.mp4")
    assert missing.status == 404


async def test_a_full_disk_ends_the_recording_with_an_event_not_the_stream(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """Recording into /dev/full (every write: ENOSPC): the recording ends and says why in an
    `error` event (the status's last_error); the stream is processed to its end regardless."""
    client, port = await _engine(engine_factory, tmp_path)
    publisher = asyncio.create_task(_run(*_publish_args(f"rtmp://127.0.0.1:{port}/live/cam", 3, realtime=True)))
    manager = client.app[LIVE_MANAGER_KEY]
    await wait_for(lambda: manager.get("cam") is not None)
    session = manager.get("cam")
    assert session is not None
    recording = Recording("cam", Path("/dev/full"))
    sink = RecordingSink(recording)
    session.attach_sink(sink)
    await wait_for(lambda: sink.done)
    assert recording.error is not None and "No space left on device" in recording.error
    assert recording.ended is not None
    rc, _, err = await publisher
    assert rc == 0, err
    status = await _final_status(client, "cam")
    assert status["error"] is None and status["end_reason"] == "input ended"
    assert status["frames_out"] == status["frames_in"] == 3 * FPS
    assert "recording of cam to /dev/full stopped" in status["inference_status"]["last_error"]


def test_recordings_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    class NotStarted:
        stream_id = "cam"

        def attach_sink(self, sink: PacketSink) -> None:
            raise AssertionError("no sink is attached when the folder cannot be made")

        async def detach_sink(self, sink: PacketSink, timeout: float = 0.0) -> None:
            raise AssertionError("unreachable")

    with pytest.raises(RecordingError, match="Cannot create the recordings folder") as caught:
        Recordings(blocker / "recs").start(NotStarted())
    assert str(blocker / "recs") in str(caught.value)
