"""End to end over real HTTP: our trickle server plays the orchestrator, the engine runs the session."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import av
import pytest
from aiohttp.test_utils import TestClient
from live_helpers import Channels, Collected, collect, events_of, publish_segments, wait_for

from livestream.live.testsrc import decode_ts, read_number, red_patch
from trickle import TricklePublisher


async def create_channels(http: aiohttp.ClientSession, ch: Channels) -> None:
    for url in (ch.publish_url, ch.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200


async def open_channels(
    http: aiohttp.ClientSession, ch: Channels
) -> tuple[Collected, Collected, list[asyncio.Task[None]]]:
    """Create a stream's output and events channels and start reading both until they close."""
    await create_channels(http, ch)
    out, events = Collected(), Collected()
    readers = [
        asyncio.create_task(collect(ch.publish_url, http, out)),
        asyncio.create_task(collect(ch.events_url, http, events)),
    ]
    return out, events, readers


async def start(engine: TestClient[Any, Any], ch: Channels, **extra: Any) -> dict[str, Any]:
    resp = await engine.post("/live-video-to-video", json=ch.start_body(**extra))
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def status(engine: TestClient[Any, Any], stream: str) -> dict[str, Any]:
    resp = await engine.get(f"/live/{stream}/status")
    assert resp.status == 200
    return await resp.json()


async def health(engine: TestClient[Any, Any]) -> str:
    return (await (await engine.get("/health")).json())["status"]


def numbers(frames: list[Any]) -> list[int]:
    return [read_number(f) for f in frames]


async def test_noop_end_to_end(engine, orchestrator, http, ts_segments) -> None:
    ch = Channels(orchestrator, "s1")
    segments = ts_segments(90)
    out, events, readers = await open_channels(http, ch)
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        body = await start(engine, ch, model_id="noop", stream_id="s1")
        assert body["stream_id"] == "s1"
        await publish_segments(pub, segments, gap=0.4)
        listed = await (await engine.get("/live")).json()
        assert [s["stream_id"] for s in listed["sessions"]] == ["s1"]
    # Input closed (DELETE): the session ends and closes its output at once.
    async with asyncio.timeout(10):
        await asyncio.gather(*readers)

    frames, pts, audio_frames = decode_ts(out.data)
    assert len(frames) == 90
    assert numbers(frames) == list(range(90))
    assert {f.shape for f in frames} == {(128, 128, 3)}
    assert audio_frames > 0
    # Output pts follow input pts (the source starts at frame 0 of a 30 fps clock, +muxer offset).
    steps = {b - a for a, b in zip(pts, pts[1:], strict=False)}
    assert steps == {3000}
    # Every output segment stands alone and starts with a keyframe.
    for data in out.segments:
        with av.open(io.BytesIO(data), format="mpegts") as c:
            first = next(p for p in c.demux(c.streams.video[0]) if p.size)
            assert first.is_keyframe

    evs = events_of(events)
    assert all(set(e) == {"event", "queue_event_type"} for e in evs)
    kinds = [e["event"]["type"] for e in evs]
    assert "runner_receive_stream_request" in kinds and "runner_send_first_processed_segment" in kinds
    statuses = [e["event"] for e in evs if e["event"]["type"] == "status"]
    assert len(statuses) >= 2
    first_status = statuses[0]
    for key in ("pipeline", "start_time", "state", "last_state_update_time", "input_status", "inference_status"):
        assert key in first_status
    assert set(first_status["inference_status"]) >= {"fps", "last_params", "restart_count", "last_error"}
    final = statuses[-1]
    assert final["final"] and final["state"] == "OFFLINE" and final["end_reason"] == "input ended"
    assert final["frames_out"] == 90 and final["dropped_frames"] == 0
    assert final["e2e_latency_ms"]["p50"] is not None

    st = await status(engine, "s1")
    assert st["state"] == "OFFLINE" and st["frames_out"] == 90
    assert (await (await engine.get("/live")).json())["sessions"] == []


async def test_control_changes_effect_mid_stream(engine_factory, orchestrator, http, ts_segments) -> None:
    from dataclasses import replace

    from live_helpers import TEST_CONFIG

    # The input pauses while the test waits for the update: a longer stall timeout.
    engine = await engine_factory(config=replace(TEST_CONFIG, input_timeout=20.0))
    ch = Channels(orchestrator, "fx")
    segments = ts_segments(90)
    out, events, readers = await open_channels(http, ch)
    async with (
        TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub,
        TricklePublisher(ch.control_url, "application/json", session=http) as control,
    ):
        await start(engine, ch, model_id="color-filter", stream_id="fx", params={"hue_shift": 0})
        await publish_segments(pub, segments[:1])
        await wait_for(lambda: _frames_out(engine, "fx", 30))
        for message in (b'{"keep":"alive"}', b'{"saturation": 99}', b'{"saturation": 0}'):
            async with control.segment() as seg:
                await seg.write(message)
        await wait_for(lambda: _params(engine, "fx", saturation=0.0))
        await publish_segments(pub, segments[1:], gap=0.4)
    async with asyncio.timeout(10):
        await asyncio.gather(*readers)

    frames, _, _ = decode_ts(out.data)
    assert numbers(frames) == list(range(90))
    r, g, b = red_patch(frames[0])
    assert r > 150 and g < 80  # red before the update
    r, g, b = red_patch(frames[-1])
    assert abs(r - g) < 20 and abs(g - b) < 20  # gray after it
    errors = [e["event"]["message"] for e in events_of(events) if e["event"]["type"] == "error"]
    assert any("saturation" in m for m in errors)  # the bad update was reported...
    final = await status(engine, "fx")
    assert final["params"]["saturation"] == 0.0 and final["control_messages"] == 1  # ...and skipped


async def _frames_out(engine: TestClient[Any, Any], stream: str, n: int) -> bool:
    return (await status(engine, stream))["frames_out"] >= n


async def _params(engine: TestClient[Any, Any], stream: str, **expected: Any) -> bool:
    params = (await status(engine, stream))["params"]
    return all(params[k] == v for k, v in expected.items())


async def test_session_api_params_patch_and_stop(engine, orchestrator, http, ts_segments) -> None:
    ch = Channels(orchestrator, "api")
    await create_channels(http, ch)
    out = Collected()
    reader = asyncio.create_task(collect(ch.publish_url, http, out))
    pipelines = await (await engine.get("/live/pipelines")).json()
    names = {p["name"]: p for p in pipelines["pipelines"]}
    assert {"noop", "color-filter"} <= set(names)
    assert "saturation" in names["color-filter"]["params_schema"]["properties"]

    resp = await engine.post("/live-video-to-video", json=ch.start_body(model_id="color-filter", params={"bogus": 1}))
    assert resp.status == 400
    assert "bogus" in (await resp.json())["detail"]["msg"]

    pub = TricklePublisher(ch.subscribe_url, "video/mp2t", session=http)
    async with pub:
        body = await start(engine, ch, model_id="color-filter", params={"invert": True})
        assert body["stream_id"] == "api"  # gateway_request_id when stream_id is empty
        await publish_segments(pub, ts_segments(90)[:1])
        await wait_for(lambda: _frames_out(engine, "api", 10))
        resp = await engine.post("/live/api/params", json={"saturation": 0.5})
        assert resp.status == 200
        assert (await resp.json())["params"] == {**(await status(engine, "api"))["params"], "saturation": 0.5}
        resp = await engine.post("/live/api/params", json={"saturation": -1})
        assert resp.status == 400
        await wait_for(lambda: _params(engine, "api", saturation=0.5, invert=True))
        resp = await engine.delete("/live/api")
        assert resp.status == 200
        final = await resp.json()
        assert final["final"] and final["end_reason"] == "stopped via API"
        async with asyncio.timeout(5):
            await reader  # the output channel was closed
        assert (await engine.delete("/live/api")).status == 404
        assert (await engine.get("/live/nope/status")).status == 404
    frames, _, _ = decode_ts(out.data)
    # Inverted: the drawn bits read back complemented.
    assert frames and numbers(frames) == [0xFFFF - i for i in range(len(frames))]


async def test_corrupt_segment_is_skipped(engine, orchestrator, http, ts_segments) -> None:
    ch = Channels(orchestrator, "bad")
    segments = ts_segments(90)
    out, events, readers = await open_channels(http, ch)
    garbage = bytes(range(256)) * 200
    truncated = segments[1][: len(segments[1]) // 2 + 5]
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        await start(engine, ch, stream_id="bad")
        await publish_segments(pub, [segments[0], garbage, truncated, segments[2]], gap=0.4)
    async with asyncio.timeout(10):
        await asyncio.gather(*readers)
    frames, _, _ = decode_ts(out.data)
    got = numbers(frames)
    assert got[:30] == list(range(30)) and got[-30:] == list(range(60, 90))
    assert got == sorted(got)
    errors = [e["event"]["message"] for e in events_of(events) if e["event"]["type"] == "error"]
    assert any("skipped" in m for m in errors)
    assert any("truncated" in m for m in errors)
    final = [e["event"] for e in events_of(events) if e["event"].get("final")][0]
    assert final["state"] == "OFFLINE" and final["bad_input_segments"] == 1


async def test_stalled_input_ends_session(engine, orchestrator, http, ts_segments) -> None:
    ch = Channels(orchestrator, "stall")
    out, events, readers = await open_channels(http, ch)
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        await start(engine, ch, stream_id="stall")
        await publish_segments(pub, ts_segments(90)[:1])
        # No more input and no close: the 2 s input timeout ends the session.
        async with asyncio.timeout(8):
            await asyncio.gather(*readers)
    frames, _, _ = decode_ts(out.data)
    assert numbers(frames) == list(range(30))
    evs = [e["event"] for e in events_of(events)]
    assert any(e["type"] == "error" and "input stalled" in e["message"] for e in evs)
    final = evs[-1]
    assert final["final"] and final["state"] == "ERROR" and final["end_reason"] == "input stalled"


async def test_pipeline_crash_ends_only_its_session(engine, orchestrator, http, ts_segments) -> None:
    good, bad = Channels(orchestrator, "good"), Channels(orchestrator, "crashy")
    segments = ts_segments(90)
    for ch in (good, bad):
        await create_channels(http, ch)
    good_out, bad_out, bad_events = Collected(), Collected(), Collected()
    readers = [
        asyncio.create_task(collect(good.publish_url, http, good_out)),
        asyncio.create_task(collect(bad.publish_url, http, bad_out)),
        asyncio.create_task(collect(bad.events_url, http, bad_events)),
    ]
    async with (
        TricklePublisher(good.subscribe_url, "video/mp2t", session=http) as good_pub,
        TricklePublisher(bad.subscribe_url, "video/mp2t", session=http) as bad_pub,
    ):
        await start(engine, good, stream_id="good")
        await start(engine, bad, stream_id="crashy", model_id="crash")
        await asyncio.gather(
            publish_segments(good_pub, segments, gap=0.4), publish_segments(bad_pub, segments[:1])
        )
    async with asyncio.timeout(10):
        await asyncio.gather(*readers)
    frames, _, _ = decode_ts(good_out.data)
    assert numbers(frames) == list(range(90))
    evs = [e["event"] for e in events_of(bad_events)]
    assert any(e["type"] == "restart" and e["restart_count"] == 1 for e in evs)
    final = evs[-1]
    assert final["final"] and final["state"] == "ERROR" and "boom" in final["error"]
    assert not bad_out.data or decode_ts(bad_out.data)[0] == []
    assert (await status(engine, "good"))["frames_out"] == 90


@pytest.mark.parametrize("runner_mode", [False, True])
async def test_session_limit(engine_factory, orchestrator, http, runner_mode) -> None:
    from livestream.settings import Settings

    if runner_mode:
        settings = Settings(pipeline="live-video-to-video", model_id="noop")
    else:
        settings = Settings(max_live_sessions=1)
    engine = await engine_factory(settings)
    a, b = Channels(orchestrator, "a"), Channels(orchestrator, "b")
    if runner_mode:
        assert await health(engine) == "IDLE"
    async with TricklePublisher(a.subscribe_url, "video/mp2t", session=http):
        await start(engine, a, stream_id="a")
        if runner_mode:
            assert await health(engine) == "OK"
        resp = await engine.post("/live-video-to-video", json=b.start_body(stream_id="b"))
        if not runner_mode:
            assert resp.status == 503
            assert "limit" in (await resp.json())["detail"]["msg"]
            await engine.delete("/live/a")
        else:
            assert resp.status == 200  # ai-runner: a new start replaces the running stream
            sessions = (await (await engine.get("/live")).json())["sessions"]
            assert [s["stream_id"] for s in sessions] == ["b"]
            assert (await status(engine, "a"))["end_reason"] == "replaced by a new stream"
            resp = await engine.post("/live-video-to-video", json=b.start_body(model_id="color-filter"))
            assert resp.status == 400  # model_id other than the runner's pipeline
            await engine.delete("/live/b")
            assert await health(engine) == "IDLE"


async def test_resolution_change_mid_stream(engine, orchestrator, http) -> None:
    from livestream.live.testsrc import make_ts_segments

    ch = Channels(orchestrator, "res")
    await create_channels(http, ch)
    segments = make_ts_segments(frames=60, width=128, height=128) + make_ts_segments(
        frames=30, width=96, height=96, start_number=60
    )
    out = Collected()
    reader = asyncio.create_task(collect(ch.publish_url, http, out))
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        await start(engine, ch, stream_id="res", model_id="color-filter")
        await publish_segments(pub, segments, gap=0.4)
    async with asyncio.timeout(10):
        await reader
    frames, _, _ = decode_ts(out.data)
    assert [f.shape[0] for f in frames] == [128] * 60 + [96] * 30
    assert numbers(frames) == list(range(90))


async def test_shutdown_ends_sessions_with_a_final_event(engine_factory, orchestrator, http, ts_segments) -> None:
    import time

    engine = await engine_factory()
    ch = Channels(orchestrator, "bye")
    out, events, readers = await open_channels(http, ch)
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        await start(engine, ch, stream_id="bye")
        await publish_segments(pub, ts_segments(90)[:1])
        await wait_for(lambda: _frames_out(engine, "bye", 30))
        started = time.monotonic()
        await engine.close()  # the app's cleanup: what SIGTERM runs under web.run_app
        assert time.monotonic() - started < 5
        async with asyncio.timeout(5):
            await asyncio.gather(*readers)
    final = events_of(events)[-1]["event"]
    assert final["final"] and final["end_reason"] == "engine shutting down" and final["state"] == "OFFLINE"
    frames, _, _ = decode_ts(out.data)
    assert numbers(frames) == list(range(30))


async def test_session_api_requires_the_bearer_token_when_set(engine_factory) -> None:
    from livestream.settings import Settings

    engine = await engine_factory(Settings(auth_token="s3cret"))
    assert (await engine.get("/live")).status == 401
    assert (await engine.delete("/live/x")).status == 401
    headers = {"Authorization": "Bearer s3cret"}
    assert (await engine.get("/live", headers=headers)).status == 200
    assert (await engine.delete("/live/x", headers=headers)).status == 404


async def test_params_set_the_output_size(engine, orchestrator, http, ts_segments) -> None:
    ch = Channels(orchestrator, "size")
    await create_channels(http, ch)
    out = Collected()
    reader = asyncio.create_task(collect(ch.publish_url, http, out))
    async with TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub:
        await start(engine, ch, stream_id="size", model_id="noop", params={"width": 64, "height": 96})
        await publish_segments(pub, ts_segments(90)[:1])
        # The input channel stays open until the session has read it (closing it ends the stream).
        await wait_for(lambda: _frames_out(engine, "size", 30), timeout=10)
    async with asyncio.timeout(10):
        await reader
    frames, _, _ = decode_ts(out.data)
    assert len(frames) == 30 and {f.shape for f in frames} == {(96, 64, 3)}
    resp = await engine.post("/live-video-to-video", json=ch.start_body(params={"width": 100, "height": 64}))
    assert resp.status == 400  # not a multiple of 8


async def test_health_is_error_when_the_runner_pipeline_cannot_load(engine_factory, orchestrator) -> None:
    from livestream.settings import Settings

    engine = await engine_factory(Settings(pipeline="live-video-to-video", model_id="broken"))
    await wait_for(lambda: _health_is(engine, "ERROR"), timeout=10)
    # A stream still gets an answer, and its session ends with the load error.
    ch = Channels(orchestrator, "nope")
    await start(engine, ch, stream_id="nope")
    await wait_for(lambda: _ended(engine, "nope"), timeout=10)
    st = await status(engine, "nope")
    assert st["state"] == "ERROR" and "weights not found" in st["error"]


async def _frames_out(engine: TestClient[Any, Any], stream: str, frames: int) -> bool:
    return int((await status(engine, stream)).get("frames_out", 0)) >= frames


async def _health_is(engine: TestClient[Any, Any], expected: str) -> bool:
    return await health(engine) == expected


async def _ended(engine: TestClient[Any, Any], stream: str) -> bool:
    resp = await engine.get(f"/live/{stream}/status")
    return resp.status == 200 and bool((await resp.json()).get("final"))
