"""ControlNets switched live over trickle: ai-runner's `sdturbo` file with a distinct tiny
ControlNet folder per entry (6 channels for the TemporalNet2 entry) starts a session; a
control message mid-stream then removes one, scales others up, changes a preprocessor and
adds one; depth runs on a tiny Depth Anything, pose on a tiny ViTPose; frames never go blank, there is no error and no reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from live_helpers import DIFFUSION_CONFIG, run_live_stream, send_params

from livestream.live.testsrc import make_ts_segments
from trickle import TricklePublisher

DATA = Path(__file__).parent.parent / "streamdiffusion" / "data"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_streamdiffusion_dir: Path) -> dict[str, Path]:
    from pipelines.testing import write_tiny_model
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    root = tmp_path_factory.mktemp("sdcn")
    out = {"sd": tiny_streamdiffusion_dir}
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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


async def test_controlnets_switch_live_over_trickle(
    engine_factory: Any, orchestrator: Any, http: Any, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUX_MODELS", f"safety=/nonexistent/nsfw-classifier,depth={tiny_models['depth']},pose={tiny_models['pose']}")
    engine = await engine_factory(config=DIFFUSION_CONFIG)
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

    async def switch(control: TricklePublisher) -> None:
        await send_params(engine, stream, control, update)

    frames, evs = await run_live_stream(
        engine, orchestrator, http, stream, "streamdiffusion-sdturbo", params, segments, switch
    )

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
