"""The live runner against the stand-in orchestrator: register → ready → reserve → a noop stream
through the proxy and the public trickle URLs → stop → released; and the faults of issue #26."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from livestream.live import LIVE_MANAGER_KEY
from livestream.live.testsrc import make_ts_segments
from livestream.liverunner.client import LiveRunnerClient, ReservedSession
from trickle import TricklePublisher, TrickleSubscriber

from liverunner_helpers import Engine, EngineFactory
from liverunner_standin import SESSION_HEADERS, StandinOrchestrator, validate_heartbeat

SEGMENTS = make_ts_segments(frames=60, width=64, height=64, audio=False)


async def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def ready_runners(standin: StandinOrchestrator) -> list[Any]:
    return [r for r in standin.runners.values() if r.ready]


async def start_stream(
    http: aiohttp.ClientSession, standin: StandinOrchestrator, app: str = "live-video-to-video/noop"
) -> tuple[ReservedSession, dict[str, Any]]:
    client = LiveRunnerClient(standin.base, http)
    runners = await client.discovery(app=app)
    assert runners, "the runner is not discoverable"
    session = await client.reserve(runners[0])
    stream = await session.call("POST", "stream/start", {"params": {}})
    return session, stream


async def push_and_receive(http: aiohttp.ClientSession, stream: dict[str, Any]) -> list[bytes]:
    """Publish the test segments to the public input URL; read the first output segment."""
    received: list[bytes] = []

    async def read() -> None:
        async with TrickleSubscriber(stream["output_url"], start_seq=0, session=http) as sub:
            async for segment in sub:
                data = await segment.read()
                if data:
                    received.append(data)
                    return

    reader = asyncio.create_task(read())
    async with TricklePublisher(stream["input_url"], "video/mp2t", session=http) as pub:
        for data in SEGMENTS:
            async with pub.segment() as seg:
                await seg.write(data)
        await asyncio.wait_for(reader, 30)
    return received


async def test_register_reserve_stream_stop_released(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    status, body = standin.heartbeats[-1]
    assert status == 200 and validate_heartbeat(body) is None
    for key in ("runner_url", "app", "mode", "capacity", "status", "version", "metadata", "price_info", "session_ids"):
        assert key in body, key
    assert body["mode"] == "persistent" and body["capacity"] == 2 and body["status"] == "ready"
    assert body["price_info"] == {"price": "0.5", "currency": "usd", "unit": "hour"}

    async with aiohttp.ClientSession() as http:
        session, stream = await start_stream(http, standin)
        assert stream["session_id"] == session.session_id
        # Public URLs go to the client; the engine reads and writes the internal ones.
        assert stream["input_url"].startswith(standin.base) and stream["output_url"].startswith(standin.base)
        local = eng.app[LIVE_MANAGER_KEY].get(session.session_id)
        assert local is not None and local.request.subscribe_url.startswith(standin.internal_base)
        assert local.request.subscribe_url != stream["input_url"]
        proxied = standin.proxied[-1]
        assert proxied["path"] == "/runner/stream/start" and all(proxied[h] for h in SESSION_HEADERS)

        received = await push_and_receive(http, stream)
        assert received and received[0][0] == 0x47  # MPEG-TS
        status_answer = await session.call("GET", "stream/status")
        assert status_answer["session_id"] == session.session_id

        await session.call("POST", "stream/stop")
        assert session.session_id in standin.released  # the runner's stop callback
        assert not eng.runner.sessions.ids()
        await wait_for(lambda: not standin.heartbeats[-1][1].get("session_ids"))


async def test_requests_without_session_headers_are_refused(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{eng.port}/runner/stream/start", json={}) as response:
            assert response.status == 400
            assert "Livepeer-Session-Id" in (await response.json())["error"]["message"]
        # Forged headers: the orchestrator refuses the channels (unknown session, bad token).
        headers = {
            "Livepeer-Session-Id": "session_forged",
            "Livepeer-Session-Token": "x",
            "Livepeer-Session-Control": f"{standin.base}/runner/nobody/session/session_forged",
        }
        async with http.post(f"http://127.0.0.1:{eng.port}/runner/stream/start", json={}, headers=headers) as response:
            assert response.status == 403


async def test_status_unavailable_until_loaded(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    await engine(model="slow")
    await wait_for(lambda: bool(ready_runners(standin)))
    statuses = [body.get("status") for code, body in standin.heartbeats if code == 200]
    assert statuses[0] == "unavailable" and statuses[-1] == "ready"


async def test_orchestrator_restart_rebootstraps(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    first_o2r = eng.runner.registration.o2r
    async with aiohttp.ClientSession() as http:
        session, _ = await start_stream(http, standin)
        assert eng.runner.sessions.ids() == [session.session_id]
        standin.restart()  # registry lost: the next heartbeat gets 401
        await wait_for(lambda: eng.runner.registration.registrations == 2 and bool(ready_runners(standin)))
        assert any(code == 401 for code, _ in standin.heartbeats)
        assert eng.runner.registration.o2r is not first_o2r
        # The new registration has no sessions: the old one is stopped here.
        await wait_for(lambda: not eng.runner.sessions.ids())
        _, stream = await start_stream(http, standin)  # and it serves new ones
        assert stream["input_url"]


async def test_dropped_released_event_reconciled_by_heartbeat(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    standin.drop_released = True
    async with aiohttp.ClientSession() as http:
        session, _ = await start_stream(http, standin)
        await session.stop()  # the client stops it at the orchestrator; no O2R event arrives
        manager = eng.app[LIVE_MANAGER_KEY]
        took = await wait_for(lambda: not eng.runner.sessions.ids() and manager.get(session.session_id) is None)
    interval = eng.runner.registration.interval or 0.0
    assert took < 2 * interval + 1.0, f"stopped after {took:.2f} s (heartbeat every {interval} s)"


async def test_released_event_stops_session(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    async with aiohttp.ClientSession() as http:
        session, _ = await start_stream(http, standin)
        await session.stop()
        await wait_for(lambda: not eng.runner.sessions.ids(), timeout=5)
    assert any(m.get("event") == "released" for _, m in standin.o2r_sent)
    assert (eng.runner.registration.o2r is not None) and eng.runner.registration.o2r.messages >= 2


async def test_o2r_gone_rebootstraps(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    runner = next(iter(standin.runners.values()))
    standin.trickle.close_channel(runner.o2r_channel)
    await wait_for(lambda: eng.runner.registration.registrations == 2 and eng.runner.registration.registered)


async def test_heartbeat_400_logs_and_backs_off(
    standin: StandinOrchestrator, engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    standin.fail_heartbeats = [(400, "invalid capacity")] * 3
    with caplog.at_level(logging.ERROR, logger="livestream.liverunner"):
        eng = await engine()
        await wait_for(lambda: bool(ready_runners(standin)))
    assert eng.runner.registration.failures == 3
    messages = [r.getMessage() for r in caplog.records if "HTTP 400 invalid capacity" in r.getMessage()]
    assert len(messages) == 3 and "retrying with backoff" in messages[0]
    codes = [code for code, _ in standin.heartbeats]
    assert codes[:4] == [400, 400, 400, 200]


async def test_fixed_runner_id_reuse_backs_off(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    # An earlier process registered this id and died: its entry lives until the TTL.
    standin.ttl = 0.6
    async with aiohttp.ClientSession() as http:
        body = {"runner_id": "runner_fixed", "runner_url": "http://127.0.0.1:9/", "app": "live-video-to-video/noop"}
        async with http.post(f"{standin.base}/runners/heartbeat", json=body, headers={"Authorization": "orch-secret"}) as r:
            assert r.status == 200
    eng = await engine(runner_id="runner_fixed")
    await wait_for(lambda: bool(ready_runners(standin)) and eng.runner.registration.registered)
    assert eng.runner.registration.runner_id == "runner_fixed"
    assert 401 in [code for code, _ in standin.heartbeats] or 404 in [code for code, _ in standin.heartbeats]


async def test_shutdown_unregisters_and_releases(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine()
    await wait_for(lambda: bool(ready_runners(standin)))
    async with aiohttp.ClientSession() as http:
        session, _ = await start_stream(http, standin)
        await eng.close()
    assert standin.unregisters and standin.unregisters[-1][1] == 204
    assert session.session_id in standin.released and not standin.runners


async def test_capacity_refuses_more_sessions(standin: StandinOrchestrator, engine: EngineFactory) -> None:
    eng = await engine(capacity=1)
    await wait_for(lambda: bool(ready_runners(standin)))
    async with aiohttp.ClientSession() as http:
        await start_stream(http, standin)
        client = LiveRunnerClient(standin.base, http)
        with pytest.raises(Exception) as info:
            await client.reserve(eng.runner.registration.runner_id)
        assert getattr(info.value, "status", None) == 503
