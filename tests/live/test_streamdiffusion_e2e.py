"""`streamdiffusion` end to end over trickle with the tiny model: restyled, decodable output that
changes when the prompt changes mid-stream (through the control channel)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from live_helpers import DIFFUSION_CONFIG, live_status, run_live_stream, wait_for

from livestream.live.testsrc import decode_ts, make_ts_segments
from trickle import TricklePublisher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


async def _run_stream(
    engine: TestClient[Any, Any], orchestrator: str, http: Any, name: str, params: dict[str, Any],
    segments: list[bytes], new_prompt: str | None,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    async def change_prompt(control: TricklePublisher) -> None:
        # Two bad updates first: one the params model rejects, one the pipeline cannot apply (a
        # model folder that does not exist); the stream keeps its params.
        for bad in ({**params, "t_index_list": [60]}, {**params, "model_id": str(Path(params["model_id"]) / "missing")}):
            async with control.segment() as seg:
                await seg.write(json.dumps(bad).encode())

        async def rejected() -> bool:
            return "rejected by the pipeline" in ((await live_status(engine, name))["inference_status"]["last_error"] or "")

        await wait_for(rejected, timeout=30)
        assert (await live_status(engine, name))["params"]["model_id"] == params["model_id"]
        async with control.segment() as seg:  # a control message is a full param set
            await seg.write(json.dumps({**params, "prompt": new_prompt}).encode())

        async def applied() -> bool:
            return (await live_status(engine, name))["params"]["prompt"] == new_prompt

        await wait_for(applied, timeout=30)

    midstream = change_prompt if new_prompt is not None else None
    return await run_live_stream(engine, orchestrator, http, name, "streamdiffusion", params, segments, midstream)


async def test_streamdiffusion_over_trickle(engine_factory, orchestrator, http, tiny_streamdiffusion_dir) -> None:
    engine = await engine_factory(config=DIFFUSION_CONFIG)
    tiny_sd = tiny_streamdiffusion_dir
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
