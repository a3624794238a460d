"""`streamdiffusion` end to end over trickle with the tiny model: restyled, decodable output that
changes when the prompt changes mid-stream (through the control channel)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from live_helpers import Channels, Collected, collect, events_of, publish_segments, wait_for

from livestream.live import SessionConfig
from livestream.live.testsrc import decode_ts, make_ts_segments
from trickle import TricklePublisher


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("sd") / "tiny-streamdiffusion"
    write_tiny_model("streamdiffusion", out)
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


async def _status(engine: TestClient[Any, Any], stream: str) -> dict[str, Any]:
    resp = await engine.get(f"/live/{stream}/status")
    assert resp.status == 200
    return await resp.json()


async def _run_stream(
    engine: TestClient[Any, Any], orchestrator: str, http: Any, name: str, params: dict[str, Any],
    segments: list[bytes], new_prompt: str | None,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    ch = Channels(orchestrator, name)
    for url in (ch.publish_url, ch.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200
    out, events = Collected(), Collected()
    readers = [
        asyncio.create_task(collect(ch.publish_url, http, out)),
        asyncio.create_task(collect(ch.events_url, http, events)),
    ]
    async with (
        TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub,
        TricklePublisher(ch.control_url, "application/json", session=http) as control,
    ):
        resp = await engine.post(
            "/live-video-to-video", json=ch.start_body(model_id="streamdiffusion", stream_id=name, params=params)
        )
        assert resp.status == 200, await resp.text()
        await publish_segments(pub, segments[:1])

        async def first_segment_done() -> bool:
            return (await _status(engine, name))["frames_out"] >= 30

        await wait_for(first_segment_done, timeout=60)
        if new_prompt is not None:
            # Two bad updates first: one the params model rejects, one the pipeline cannot
            # apply (a model folder that does not exist); the stream keeps its params.
            for bad in ({**params, "t_index_list": [60]}, {**params, "model_id": str(Path(params["model_id"]) / "missing")}):
                async with control.segment() as seg:
                    await seg.write(json.dumps(bad).encode())

            async def rejected() -> bool:
                return "rejected by the pipeline" in ((await _status(engine, name))["inference_status"]["last_error"] or "")

            await wait_for(rejected, timeout=30)
            assert (await _status(engine, name))["params"]["model_id"] == params["model_id"]
            async with control.segment() as seg:  # a control message is a full param set
                await seg.write(json.dumps({**params, "prompt": new_prompt}).encode())

            async def applied() -> bool:
                return (await _status(engine, name))["params"]["prompt"] == new_prompt

            await wait_for(applied, timeout=30)
        await publish_segments(pub, segments[1:])
    async with asyncio.timeout(60):
        await asyncio.gather(*readers)
    frames, _, _ = decode_ts(out.data)
    return frames, [e["event"] for e in events_of(events)]


async def test_streamdiffusion_over_trickle(engine_factory, orchestrator, http, tiny_sd) -> None:
    # The tiny model runs at ~15 fps here: no input timeout while the first segment drains.
    engine = await engine_factory(
        config=SessionConfig(status_interval=0.25, input_timeout=60.0, stop_timeout=5.0, max_queue_lag=10.0, max_queue_frames=256)
    )
    segments = make_ts_segments(frames=60, width=64, height=64, audio=False)
    inputs, _, _ = decode_ts(b"".join(segments))
    params = {"model_id": str(tiny_sd), "prompt": "a cat", "t_index_list": [20, 35], "prompt_transition_frames": 2}
    steady, _ = await _run_stream(engine, orchestrator, http, "sd-a", params, segments, None)
    changed, events = await _run_stream(engine, orchestrator, http, "sd-b", params, segments, "a dog in the snow")

    assert len(steady) == len(changed) == 60
    assert {f.shape for f in changed} == {(64, 64, 3)}

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())

    # Restyled: far from the input; never a flat frame.
    assert min(diff(o, i) for o, i in zip(steady, inputs, strict=True)) > 10
    assert min(float(f.std()) for f in steady + changed) > 8
    # Deterministic (fixed noise) until the prompt changes, then different.
    before = np.mean([diff(a, b) for a, b in zip(steady[:25], changed[:25], strict=True)])
    after = np.mean([diff(a, b) for a, b in zip(steady[40:], changed[40:], strict=True)])
    assert after > 2.0 and after > 3 * before, (before, after)

    statuses = [e for e in events if e["type"] == "status"]
    final = statuses[-1]
    assert final["final"] and final["frames_out"] == 60 and final["error"] is None
    errors = [e["message"] for e in events if e["type"] == "error"]
    assert len(errors) == 2 and "t_index_list" in errors[0] and "missing" in errors[1], errors
    assert final["time_to_first_frame_ms"] > 0
    assert final["pipeline_status"]["family"] == "sd21" and final["pipeline_status"]["warmup_ms"] > 0
