"""RTMP end to end with real peers: Debian's ffmpeg publishes into the engine; the processed
output is pushed over RTMP into `ffmpeg -listen 1` or into a second engine's own ingest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from rtmp_helpers import FFMPEG, Engine, EngineFactory, RawPublisher, flv_numbers, free_port, obs_like_args, run_ffmpeg

from livestream.rtmp.flv import avc_tag
from livestream.rtmp.protocol import ProtocolError


async def _wait(cond: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not (await cond() if asyncio.iscoroutinefunction(cond) else cond()):
            await asyncio.sleep(0.05)


async def _status(client: TestClient[Any, Any], stream: str) -> dict[str, Any] | None:
    resp = await client.get(f"/live/{stream}/status")
    return await resp.json() if resp.status == 200 else None


async def _ended(client: TestClient[Any, Any], stream: str) -> dict[str, Any]:
    async def done() -> bool:
        s = await _status(client, stream)
        return bool(s and s.get("final"))

    await _wait(done)
    status = await _status(client, stream)
    assert status is not None
    return status


async def test_ffmpeg_publish_is_processed_and_pushed_out_in_order(
    rtmp_engine: Engine, numbered_source: Any, tmp_path: Path
) -> None:
    """OBS-like ffmpeg publish -> session (GET /live, POST /live/{stream}) -> RTMP push into ffmpeg -listen."""
    client, server = rtmp_engine
    out_port, out_file = free_port(), tmp_path / "out.flv"
    listener = await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-listen", "1", "-timeout", "20",
        "-i", f"rtmp://127.0.0.1:{out_port}/out/secretkey", "-c", "copy", "-f", "flv", str(out_file),
    )  # fmt: skip
    await asyncio.sleep(0.5)
    # Params and the push destination are set before the stream is published.
    resp = await client.post("/live/cam", json={"rtmp_output": f"rtmp://127.0.0.1:{out_port}/out/secretkey"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["live"] is False and body["rtmp_output"].endswith("/out/secretkey")

    url = f"rtmp://127.0.0.1:{server.port}/live/cam"
    publisher = asyncio.create_task(run_ffmpeg(obs_like_args(numbered_source(120), url)))

    async def listed() -> bool:
        resp = await client.get("/live")
        return any(s["stream_id"] == "cam" for s in (await resp.json())["sessions"])

    await _wait(listed)
    listing = (await (await client.get("/live")).json())["sessions"]
    assert listing[0]["ingest"] == "rtmp" and listing[0]["outputs"] == ["rtmp-push"]
    rc, err = await publisher
    assert rc == 0, err
    status = await _ended(client, "cam")
    assert status["error"] is None and status["end_reason"] == "input ended"
    assert status["ingest"]["video_codec"] == "h264" and status["ingest"]["audio_codec"] == "aac"
    assert status["frames_in"] == 120 and status["frames_out"] == 120
    assert await asyncio.wait_for(listener.wait(), 20) == 0
    numbers, audio_frames = flv_numbers(out_file)
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[-1] == 119 and len(numbers) >= 110  # the push starts at the first IDR
    assert audio_frames > 100  # ~4 s of 48 kHz AAC went through


async def test_silent_audio_long_stream_keeps_exact_timestamps(rtmp_engine: Engine, numbered_source: Any) -> None:
    """A muted OBS sends constant-size AAC frames: ffmpeg starts those messages with type-3
    chunks, whose timestamps must advance by the previous delta (pyrtmp lost a third)."""
    client, server = rtmp_engine
    url = f"rtmp://127.0.0.1:{server.port}/live/silent"
    rc, err = await run_ffmpeg(
        obs_like_args(numbered_source(1800), url, realtime=False, audio="silent"), timeout=90
    )
    assert rc == 0, err
    status = await _ended(client, "silent")
    ingest = status["ingest"]
    assert ingest["video_frames"] == 1800
    # Frame 1799 at 30 fps is at 59967 ms; ffmpeg shifts everything by the AAC priming
    # (1024 samples, 21 ms) so that no timestamp is negative.
    assert 59967 <= ingest["last_video_ms"] <= 59967 + 22, ingest
    # About 60 s of 1024-sample AAC frames at 48 kHz (-shortest ends audio near the video's
    # end), and the last one is timed exactly where the frames before it put it.
    frames = ingest["audio_frames"]
    assert abs(frames * 1024 / 48 - 60000) < 200, ingest
    assert abs(ingest["last_audio_ms"] - (frames - 1) * 1024 / 48) <= 22, ingest


async def test_extended_timestamps(rtmp_engine: Engine, numbered_source: Any) -> None:
    """Timestamps above 0xFFFFFF ms (4.66 h) use the extended field on every chunk."""
    client, server = rtmp_engine
    url = f"rtmp://127.0.0.1:{server.port}/live/late"
    args = obs_like_args(numbered_source(60), url, realtime=False, extra=["-output_ts_offset", "16800"])
    rc, err = await run_ffmpeg(args)
    assert rc == 0, err
    status = await _ended(client, "late")
    assert status["error"] is None and status["frames_in"] == 60
    assert 16800000 + 1967 <= status["ingest"]["last_video_ms"] <= 16800000 + 1967 + 22


async def test_bad_publishers_are_cut_off_and_the_good_stream_goes_on(
    rtmp_engine_factory: EngineFactory, numbered_source: Any
) -> None:
    client, server = await rtmp_engine_factory(stream_keys={"goodsecret": "good"}, rtmp_idle_timeout=1.5)
    base = f"rtmp://127.0.0.1:{server.port}/live"
    good = asyncio.create_task(run_ffmpeg(obs_like_args(numbered_source(240), f"{base}/goodsecret")))

    async def good_live() -> bool:
        s = await _status(client, "good")
        return bool(s and s["frames_in"] > 5)

    await _wait(good_live)

    # Garbage instead of a handshake: the connection is closed.
    raw = RawPublisher(f"{base}/x")
    await raw.open()
    assert raw.writer is not None
    raw.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(2000))
    assert await raw.closed_by_server()
    await raw.close()

    # Disconnect mid-handshake.
    raw = RawPublisher(f"{base}/x")
    await raw.open()
    assert raw.writer is not None
    raw.writer.write(b"\x03" + bytes(700))
    await raw.close()

    # A wrong key is refused (never Publish.Start).
    raw = RawPublisher(f"{base}/wrongsecret")
    try:
        await raw.publish()
        raise AssertionError("a wrong key was accepted")
    except ProtocolError as exc:
        assert "Unauthorized" in str(exc)
    await raw.close()

    # The good stream's key again: refused as a duplicate, the first publisher keeps going.
    raw = RawPublisher(f"{base}/goodsecret")
    try:
        await raw.publish()
        raise AssertionError("a duplicate publish was accepted")
    except ProtocolError as exc:
        assert "BadName" in str(exc)
    assert await raw.closed_by_server()
    await raw.close()

    # With no keys for them, other names are refused too; configure a second engine without
    # keys for the misbehaving publishers that must get as far as a session.
    open_client, open_server = await rtmp_engine_factory(rtmp_idle_timeout=1.5)
    obase = f"rtmp://127.0.0.1:{open_server.port}/live"

    # A disconnect mid-message ends that stream cleanly.
    raw = RawPublisher(f"{obase}/midmsg")
    await raw.publish()
    payload = avc_tag(True, 1, 0, bytes(20000))
    raw.proto.send_media("video", 0, payload)  # type: ignore[union-attr]
    data = raw.proto.data_to_send()  # type: ignore[union-attr]
    raw.writer.write(data[: len(data) // 2])  # type: ignore[union-attr]
    await asyncio.sleep(0.2)
    await raw.close()
    status = await _ended(open_client, "midmsg")
    assert status["end_reason"] == "input ended"

    # A stalled publisher (sends nothing) is cut off after the idle timeout.
    raw = RawPublisher(f"{obase}/stall")
    await raw.publish()
    status = await _ended(open_client, "stall")
    assert status["end_reason"] == "input stalled" and "nothing for 1.5 s" in status["error"]
    assert await raw.closed_by_server()
    await raw.close()

    # An unsupported codec (Sorenson H.263, FLV's own) ends that stream with a clear error.
    rc, err = await run_ffmpeg(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=15",
         "-t", "4", "-c:v", "flv1", "-f", "flv", f"{obase}/sorenson"]
    )  # fmt: skip
    status = await _ended(open_client, "sorenson")
    assert "unsupported video codec Sorenson H.263" in status["error"], status

    # Meanwhile the good stream went on to its end, every frame through.
    rc, err = await good
    assert rc == 0, err
    status = await _ended(client, "good")
    assert status["error"] is None and status["frames_in"] == 240 and status["frames_out"] == 240
    assert server.rejected == 2 and server.protocol_errors >= 1


async def test_push_reconnects_with_backoff_into_our_own_ingest(
    rtmp_engine_factory: EngineFactory, numbered_source: Any
) -> None:
    """The destination is down at first: errors become events and the push retries; once a
    second engine listens there, the output arrives in its ingest as a session of its own."""
    port = free_port()
    client, server = await rtmp_engine_factory(rtmp_output=f"rtmp://127.0.0.1:{port}/live/{{stream}}-out")
    url = f"rtmp://127.0.0.1:{server.port}/live/src"
    publisher = asyncio.create_task(run_ffmpeg(obs_like_args(numbered_source(300), url)))

    async def push_failed() -> bool:
        s = await _status(client, "src")
        return bool(s and s["outputs"] and s["outputs"][0]["failures"] >= 1)

    await _wait(push_failed)
    status = await _status(client, "src")
    assert status is not None and "rtmp push to rtmp://127.0.0.1" in status["inference_status"]["last_error"]
    assert "src-out" not in status["inference_status"]["last_error"]  # the key is redacted
    second_client, _ = await rtmp_engine_factory(rtmp_port=port)

    async def arrived() -> bool:
        s = await _status(second_client, "src-out")
        return bool(s and s["frames_in"] >= 30)

    await _wait(arrived)
    rc, err = await publisher
    assert rc == 0, err
    status = await _ended(client, "src")
    assert status["outputs"] == [] or True
    second = await _ended(second_client, "src-out")
    assert second["error"] is None and second["ingest"]["video_codec"] == "h264"
    assert second["ingest"]["audio_codec"] == "aac"


async def test_delete_stops_the_stream_and_disconnects_the_publisher(rtmp_engine: Engine, numbered_source: Any) -> None:
    client, server = rtmp_engine
    url = f"rtmp://127.0.0.1:{server.port}/live/bye"
    publisher = asyncio.create_task(run_ffmpeg(obs_like_args(numbered_source(600), url)))

    async def live() -> bool:
        s = await _status(client, "bye")
        return bool(s and s["frames_in"] > 10)

    await _wait(live)
    resp = await client.delete("/live/bye")
    assert resp.status == 200
    final = await resp.json()
    assert final["final"] and final["end_reason"] == "stopped via API"
    rc, _ = await asyncio.wait_for(publisher, 15)  # ffmpeg sees the connection end long before its 20 s
    assert final["frames_in"] < 600
