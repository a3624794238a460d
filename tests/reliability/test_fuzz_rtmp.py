"""RTMP over real sockets, fuzzed, while ffmpeg publishes a good stream to the same engine.

Fuzzed publishers get as far as a publish (so their bytes reach a live session's ingest), then send
generated chunks (any header type, chunk stream ids, extended timestamps, lengths at and over the
limits, Set Chunk Size values, AMF0 commands) or generated FLV tags (any codec id, packet type,
truncation). Each connection ends (closed by the server, or its stream ended with a reason); the
good stream's every frame goes through.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtmp_helpers import EngineFactory, RawPublisher, obs_like_args, run_ffmpeg

from reliability_helpers import chunk, fuzz_examples

CONNECTIONS = min(fuzz_examples(8), 60)  # each is a live session: a long run caps them


async def _status(client: Any, stream: str) -> dict[str, Any] | None:
    resp = await client.get(f"/live/{stream}/status")
    return await resp.json() if resp.status == 200 else None


async def _wait(cond: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.1)


async def _fuzz_one(base: str, n: int, raw_chunks: list[bytes] | None, tags: list[tuple[str, bytes]] | None) -> str:
    pub = RawPublisher(f"{base}/fz{n}")
    await pub.publish()
    assert pub.writer is not None and pub.proto is not None
    if tags is not None:
        for ts, (kind, payload) in enumerate(tags):
            pub.proto.send_media(kind, ts * 33, payload)
        pub.writer.write(pub.proto.data_to_send())
    else:
        assert raw_chunks is not None
        pub.writer.write(b"".join(raw_chunks))
    try:
        await pub.writer.drain()
    except ConnectionError:
        pass
    # The server cuts the connection (a protocol error, an unsupported codec) or the idle
    # timeout does (a message that never completes); either way it ends.
    closed = await pub.closed_by_server(timeout=20)
    await pub.close()
    return "closed" if closed else "open"


async def test_fuzzed_publishers_end_and_the_good_stream_goes_on(
    rtmp_engine_factory: EngineFactory, numbered_source: Any
) -> None:
    cases: list[tuple[list[bytes] | None, list[tuple[str, bytes]] | None]] = []
    tag = st.tuples(st.sampled_from(["video", "audio"]), st.one_of(st.binary(max_size=40), st.binary(min_size=1, max_size=3).map(lambda b: bytes([0x17, 1]) + b)))

    @settings(max_examples=CONNECTIONS, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(st.lists(chunk(), min_size=1, max_size=8).map(lambda c: (c, None)), st.lists(tag, min_size=1, max_size=8).map(lambda t: (None, t))))
    def gather(case: tuple[list[bytes] | None, list[tuple[str, bytes]] | None]) -> None:
        cases.append(case)

    gather()
    client, server = await rtmp_engine_factory(rtmp_idle_timeout=1.5, max_live_sessions=CONNECTIONS + 2)
    base = f"rtmp://127.0.0.1:{server.port}/live"
    good = asyncio.create_task(run_ffmpeg(obs_like_args(numbered_source(150), f"{base}/good")))

    async def good_live() -> bool:
        s = await _status(client, "good")
        return bool(s and s["frames_in"] > 5)

    await _wait(good_live)
    outcomes = await asyncio.gather(*(_fuzz_one(base, n, c, t) for n, (c, t) in enumerate(cases)))
    assert set(outcomes) == {"closed"}, outcomes
    rc, err = await good
    assert rc == 0, err

    async def good_ended() -> bool:
        s = await _status(client, "good")
        return bool(s and s["state"] in ("OFFLINE", "ERROR"))

    await _wait(good_ended)
    status = await _status(client, "good")
    assert status is not None and status["error"] is None and status["frames_out"] == 150
