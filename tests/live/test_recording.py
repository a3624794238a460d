"""Recording (`livestream.egress.recording`) end to end: ffmpeg publishes over RTMP, the engine
records the processed output to fragmented MP4, and ffprobe/ffmpeg read what was written:
the whole file, a copy cut short (a crash), and a recording whose disk fills up."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from live_helpers import wait_for

from livestream.cli import build_parser, settings_from_args
from livestream.egress import PacketSink
from livestream.egress.recording import Mp4Writer, Recording, RecordingError, RecordingSink, Recordings
from livestream.errors import ConfigError
from livestream.live import LIVE_MANAGER_KEY
from livestream.live.testsrc import draw_frame
from livestream.media.audio_frames import adts_header
from livestream.media.packets import EncodedPacket
from livestream.media.video_encoder import EncoderConfig, H264Encoder
from livestream.protocols import RTMP_SERVER_KEY
from livestream.settings import Settings

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
#: The `engine_factory` fixture (tests/live/conftest.py).
EngineFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
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
    """POST starts (201; 409 twice), DELETE stops (the files are finished at once), GET lists
    them: the processed output, and with {"input": true} the publisher's stream as sent."""
    client, port = await _engine(engine_factory, tmp_path)
    assert (await client.post("/live/cam/record")).status == 404  # not live yet
    publisher = asyncio.create_task(_run(*_publish_args(f"rtmp://127.0.0.1:{port}/live/cam", 3, realtime=True)))
    manager = client.app[LIVE_MANAGER_KEY]

    async def producing() -> bool:
        session = manager.get("cam")
        return session is not None and session.frames_out > 0

    await wait_for(producing)
    resp = await client.post("/live/cam/record", json={"input": True})
    assert resp.status == 201, await resp.text()
    started = await resp.json()
    assert started["ended"] is None and started["recording"] is True and started["source"] == "output"
    assert started["input"]["source"] == "input" and started["input"]["path"].endswith("-input.mp4")
    again = await client.post("/live/cam/record")
    assert again.status == 409 and "already being recorded" in (await again.json())["detail"]["msg"]
    session = manager.get("cam")
    assert session is not None
    recorded_from = session.frames_out
    input_file = Path(started["input"]["path"])
    # 1.5 s more, and the input file begun (at the publisher's next keyframe, within 1 s).
    await wait_for(lambda: session.frames_out > recorded_from + 45 and input_file.exists())
    resp = await client.delete("/live/cam/record")
    assert resp.status == 200, await resp.text()
    stopped = await resp.json()
    assert stopped["path"] == started["path"] and stopped["ended"] is not None and stopped["bytes"] > 0
    assert (await client.delete("/live/cam/record")).status == 404
    assert stopped["input"]["path"] == str(input_file) and stopped["input"]["ended"] is not None
    for path in (Path(stopped["path"]), input_file):
        probe = await _probe(path)
        streams = {s["codec_type"]: s for s in probe["streams"]}
        assert {k: s["codec_name"] for k, s in streams.items()} == {"video": "h264", "audio": "aac"}
        assert (streams["video"]["width"], streams["video"]["height"]) == (128, 128)
        assert 0.3 < float(probe["format"]["duration"]) < 4.5
    rc, _, err = await publisher
    assert rc == 0, err
    status = await _final_status(client, "cam")
    assert status["error"] is None
    listing = await (await client.get("/live/cam/recordings")).json()
    assert [(e["path"], e["source"]) for e in listing] == [(started["path"], "output"), (str(input_file), "input")]
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
        ingest = None

        def attach_sink(self, sink: PacketSink) -> None:
            raise AssertionError("no sink is attached when the folder cannot be made")

        async def detach_sink(self, sink: PacketSink, timeout: float = 0.0) -> None:
            raise AssertionError("unreachable")

    with pytest.raises(RecordingError, match="Cannot create the recordings folder") as caught:
        Recordings(blocker / "recs").start(NotStarted())
    assert str(blocker / "recs") in str(caught.value)


def _video_packets(frames: int, size: tuple[int, int] = (96, 64)) -> list[EncodedPacket]:
    encoder = H264Encoder(EncoderConfig())
    out: list[EncodedPacket] = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(draw_frame(i, *size), format="rgb24")
        out += encoder.encode(frame, 3000 * i + 900_000) or []  # a stream that does not start at 0
    return out + encoder.flush()


def _audio_packets(codec: str, seconds: float, *, adts: bool = False) -> list[EncodedPacket]:
    """Real encoded audio as an ingest hands it over when it copies the input's codec."""
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "fltp" if codec == "aac" else "s16"
    ctx.time_base = Fraction(1, 48000)
    ctx.open()
    out: list[EncodedPacket] = []
    samples = ctx.frame_size or 1152
    t = 0
    while t < seconds * 48000:
        tone = (np.sin(np.arange(t, t + samples) * 2 * np.pi * 440 / 48000) * 0.3).astype(np.float32)
        data = np.stack([tone, tone]) if codec == "aac" else (np.stack([tone, tone]).T.reshape(1, -1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(data, format=ctx.format.name, layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48000, t, Fraction(1, 48000)
        for packet in ctx.encode(frame):
            assert packet.pts is not None
            pts = packet.pts * 90000 // 48000 + 900_000
            payload = bytes(packet)
            if adts:
                payload = adts_header(bytes(ctx.extradata or b""), len(payload)) + payload
            out.append(
                EncodedPacket(
                    "audio", codec, payload, pts, pts, Fraction(1, 90000), sample_rate=48000, channels=2,
                    extradata=None if adts else bytes(ctx.extradata or b"") or None, adts=adts,
                    duration=samples * 90000 // 48000,
                )
            )  # fmt: skip
        t += samples
    return out


def _interleave(video: list[EncodedPacket], audio: list[EncodedPacket]) -> list[EncodedPacket]:
    """As the encode stage releases them: each audio packet right after the video reaching its time."""
    return sorted(video + audio, key=lambda p: (p.dts, p.kind == "audio"))


# MPEG audio in MP4 has one object type for layers 1-3: FFmpeg reads an MP2 track back as "mp3".
@pytest.mark.parametrize(("codec", "adts", "expected"), [("aac", True, "aac"), ("mp2", False, "mp3")])
async def test_copied_input_audio_is_recorded_as_it_is(tmp_path: Path, codec: str, adts: bool, expected: str) -> None:
    """ADTS AAC (an MPEG-TS input's, copied) is stored raw with its config; MP2 as it is."""
    path = tmp_path / f"{codec}.mp4"
    writer = Mp4Writer(path)
    writer.write(_interleave(_video_packets(60), _audio_packets(codec, 2.0, adts=adts)))
    writer.close()
    probe = await _probe(path)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert streams["video"]["codec_name"] == "h264" and int(streams["video"]["nb_read_frames"]) == 60
    assert streams["audio"]["codec_name"] == expected and int(streams["audio"]["nb_read_frames"]) > 50
    assert abs(float(probe["format"]["duration"]) - 2.0) < 0.15
    rc, _, err = await _run(FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-")
    assert rc == 0 and not err, err


async def test_video_only_and_a_short_recording_still_make_a_file(tmp_path: Path) -> None:
    """No audio within a second: the file is video only. Stopped before that: still written."""
    long, short = tmp_path / "long.mp4", tmp_path / "short.mp4"
    video = _video_packets(45)
    writer = Mp4Writer(long)
    writer.write(video)
    writer.close()
    writer = Mp4Writer(short)
    writer.write(video[:10])
    writer.close()
    for path, frames in ((long, 45), (short, 10)):
        probe = await _probe(path)
        assert [(s["codec_type"], int(s["nb_read_frames"])) for s in probe["streams"]] == [("video", frames)]


def test_record_flag_and_env(tmp_path: Path) -> None:
    def settings(env: dict[str, str], *argv: str) -> Settings:
        return settings_from_args(build_parser(env).parse_args(["serve", *argv]))

    plain = settings({})
    assert plain.record_direct is False and plain.recordings_dir is None
    flagged = settings({}, "--record", str(tmp_path))
    assert flagged.record_direct is True and flagged.recordings_dir == tmp_path
    assert settings({"RECORD_DIR": str(tmp_path)}).record_direct is True
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        settings({}, "--record", str(tmp_path / "file"))


async def test_a_clock_that_jumps_back_continues_the_file(tmp_path: Path) -> None:
    """A new source behind the same stream restarts the encoder on its own clock: the file
    keeps every frame, in order, instead of ending on a timestamp that goes back."""
    path = tmp_path / "jump.mp4"
    first, second = _video_packets(30), _video_packets(30)  # both start at the same time
    writer = Mp4Writer(path)
    writer.write(first + second)
    writer.close()
    probe = await _probe(path)
    assert int(probe["streams"][0]["nb_read_frames"]) == 60
    assert abs(float(probe["format"]["duration"]) - 2.0) < 0.15
    rc, _, err = await _run(FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-")
    assert rc == 0 and not err, err


def test_an_input_that_is_decoded_on_arrival_cannot_be_recorded_as_sent(tmp_path: Path) -> None:
    class TrickleLike:
        stream_id = "cam"
        ingest = type("TrickleIngest", (), {"name": "trickle"})()

        def attach_sink(self, sink: PacketSink) -> None:
            raise AssertionError("nothing is attached when the input cannot be recorded")

        async def detach_sink(self, sink: PacketSink, timeout: float = 0.0) -> None:
            raise AssertionError("unreachable")

    recordings = Recordings(tmp_path)
    with pytest.raises(RecordingError, match="The trickle input of 'cam' cannot be recorded as sent"):
        recordings.start(TrickleLike(), input=True)
    assert recordings.active("cam") == [] and recordings.list("cam") == []


def test_files_of_an_earlier_run_are_listed(tmp_path: Path) -> None:
    """A restarted engine lists what the folder holds for the stream (and nothing else)."""
    for name in ("cam-20261206T112200Z.mp4", "cam-20261206T112200Z-input.mp4", "cam-20261206T120000Z-2.mp4",
                 "cam-notes.mp4", "camera-20261206T112200Z.mp4", "cam-20261206T112200Z.mkv"):  # fmt: skip
        (tmp_path / name).write_bytes(b"x" * 10)
    listing = Recordings(tmp_path).list("cam")
    assert [(r.name, r.source) for r in listing] == [
        ("cam-20261206T112200Z.mp4", "output"),
        ("cam-20261206T112200Z-input.mp4", "input"),
        ("cam-20261206T120000Z-2.mp4", "output"),
    ]
    first = listing[0].info()
    assert first["started"] == 1796556120000 and first["bytes"] == 10 and first["path"] == str(tmp_path / listing[0].name)
    assert Recordings(tmp_path).find("cam", "../cam-20261206T112200Z.mp4") is None
