"""ControlNets switched live over trickle: ai-runner's `sdturbo` file with a distinct tiny
ControlNet folder per entry (6 channels for the TemporalNet2 entry) starts a session; a
control message mid-stream then removes one, scales others up, changes a preprocessor and
adds one; depth runs on a tiny Depth Anything, pose on a tiny ViTPose; frames never go blank, there is no error and no reload."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import Channels, Collected, collect, events_of, publish_segments, wait_for

from livestream.live import SessionConfig
from livestream.live.testsrc import decode_ts, make_ts_segments
from trickle import TricklePublisher

DATA = Path(__file__).parent.parent / "streamdiffusion" / "data"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pipelines.testing import write_tiny_model
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    root = tmp_path_factory.mktemp("sdcn")
    out = {"sd": root / "tiny-streamdiffusion"}
    write_tiny_model("streamdiffusion", out["sd"])
    data = json.loads((DATA / "sdturbo.json").read_text())
    for i, cn in enumerate(data["controlnets"]):
        six = cn["preprocessor"] == "temporal_net_tensorrt"
        out[cn["model_id"]] = root / f"cn-{i}"
        write_tiny_controlnet(out[cn["model_id"]], conditioning_channels=6 if six else 3, seed=20 + i)
    out["depth"] = root / "depth"
    write_tiny_model("depth", out["depth"])
    out["pose"] = root / "pose"
    write_tiny_model("pose", out["pose"])
    out["extra"] = root / "cn-extra"
    write_tiny_controlnet(out["extra"], seed=40)
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


async def _status(engine: Any, stream: str) -> dict[str, Any]:
    resp = await engine.get(f"/live/{stream}/status")
    assert resp.status == 200
    return await resp.json()


async def test_controlnets_switch_live_over_trickle(
    engine_factory: Any, orchestrator: Any, http: Any, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUX_MODELS", f"safety=/nonexistent/nsfw-classifier,depth={tiny_models['depth']},pose={tiny_models['pose']}")
    engine = await engine_factory(
        config=SessionConfig(status_interval=0.25, input_timeout=60.0, stop_timeout=5.0, max_queue_lag=10.0, max_queue_frames=256)
    )
    data = json.loads((DATA / "sdturbo.json").read_text())
    cns = [{**cn, "model_id": str(tiny_models[cn["model_id"]])} for cn in data["controlnets"]]
    params = {**data, "model_id": str(tiny_models["sd"]), "width": 64, "height": 64, "controlnets": cns}
    # mid-stream: drop the first (pose), canny up to 0.9 with soft_edge instead, TemporalNet on,
    # and a new one added with feedback
    switched = [
        {**cns[1], "conditioning_scale": 0.6},
        {**cns[2], "conditioning_scale": 0.9, "preprocessor": "soft_edge", "preprocessor_params": {}},
        cns[3],
        cns[4],
        {**cns[5], "conditioning_scale": 0.4},
        {"model_id": str(tiny_models["extra"]), "preprocessor": "feedback", "conditioning_scale": 0.5},
    ]
    update = {**params, "controlnets": switched}
    segments = make_ts_segments(frames=60, width=64, height=64, audio=False)
    stream = "cn-live"
    ch = Channels(orchestrator, stream)
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
        body = ch.start_body(model_id="streamdiffusion-sdturbo", stream_id=stream, params=params)
        resp = await engine.post("/live-video-to-video", json=body)
        assert resp.status == 200, await resp.text()
        await publish_segments(pub, segments[:1])

        async def first_segment_done() -> bool:
            return (await _status(engine, stream))["frames_out"] >= 30

        await wait_for(first_segment_done, timeout=60)
        async with control.segment() as seg:
            await seg.write(json.dumps(update).encode())

        async def applied() -> bool:
            return (await _status(engine, stream))["inference_status"]["last_params_update_time"] is not None

        await wait_for(applied, timeout=30)
        await publish_segments(pub, segments[1:])
    async with asyncio.timeout(60):
        await asyncio.gather(*readers)
    frames, _, _ = decode_ts(out.data)
    evs = [e["event"] for e in events_of(events)]

    assert len(frames) == 60 and min(float(f.std()) for f in frames) > 8  # never a blank frame
    assert [e for e in evs if e["type"] == "error"] == []
    statuses = [e for e in evs if e["type"] == "status"]
    final = statuses[-1]
    assert final["final"] and final["error"] is None and final["control_messages"] == 1
    ps = final["pipeline_status"]
    assert ps["reloads"] == 0 and ps["worker"]["model_reloads"] == 0
    assert [c["loaded"] for c in ps["controlnets"]] == [True] * 6
    assert [c["preprocessor"] for c in ps["controlnets"]][1] == "soft_edge"
    # only what cannot run here is warned about: TensorRT and the NSFW model (depth runs on the
    # tiny Depth Anything, pose on the tiny ViTPose, TemporalNet on OpenCV's optical flow)
    warnings = {w["field"]: w["message"] for w in final["warnings"]}
    assert set(warnings) == {"acceleration", "use_safety_checker"}, warnings
