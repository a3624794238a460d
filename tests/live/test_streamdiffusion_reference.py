"""ai-runner's six `streamdiffusion` default param files, end to end over trickle: each starts a
session under its variant name (model ids pointed at the tiny sd-turbo-family model, or the
tiny SDXL for the `sdxl*` files; the ControlNet ids are not downloadable here: a warning), produces decodable,
restyled frames with no `error` event, applies the same file as a control update mid-stream
without a blank frame, and reports what runs without which part (status `warnings`, one
`warning` event each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from live_helpers import DIFFUSION_CONFIG, run_live_stream, send_params

from livestream.live.testsrc import make_ts_segments
from trickle import TricklePublisher

DATA = Path(__file__).parent.parent / "streamdiffusion" / "data"

# What each file runs without here (a CPU without TensorRT, no network, no NSFW classifier).
# The IP-Adapter (regular) and cached attention run (part 6): the files' style image comes from
# a stand-in fetch, the adapters (regular, FaceID and its face embedder) from the tiny ones.
EXPECTED = {
    "sdturbo": {"acceleration", "controlnets", "use_safety_checker"},
    "sd15": {"acceleration", "controlnets"},
    "sd15_v2v": {"acceleration", "controlnets"},
    "sdxl": {"acceleration", "controlnets"},
    "sdxl_faceid": {"acceleration", "controlnets"},
    "sdxl_v2v": {"acceleration", "controlnets"},
}


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `-sdxl*` files run on a tiny SDXL (two text encoders, text/time embeddings)."""
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("sdxl") / "tiny-streamdiffusion-sdxl"
    write_tiny_model("streamdiffusion-sdxl", out)
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_ip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("ip")
    write_tiny_model("ip-adapter", out / "regular")
    write_tiny_model("ip-adapter-faceid", out / "faceid")
    write_tiny_model("face-embedding", out / "face")
    return out


@pytest.fixture(autouse=True)
def _offline_style_images(monkeypatch: pytest.MonkeyPatch, tiny_ip: Path) -> list[str]:
    """The style image URLs of the files are on the internet: a stand-in image answers (and
    the fetch is recorded); the IP-Adapter is the tiny one."""
    from PIL import Image

    fetched: list[str] = []

    def fetch(url: str) -> Any:
        fetched.append(url)
        return Image.new("RGB", (32, 32), (200, 40, 10))

    monkeypatch.setattr("pipelines.live.streamdiffusion.fetch_style_image", fetch)
    aux = f"ip_adapter={tiny_ip / 'regular'},faceid={tiny_ip / 'faceid'},face_embedding={tiny_ip / 'face'}"
    monkeypatch.setenv("AUX_MODELS", f"safety=/nonexistent/nsfw-classifier,{aux}")
    return fetched


def _params(name: str, tiny_sd: Path, tiny_sdxl: Path) -> dict[str, Any]:
    data = json.loads((DATA / f"{name}.json").read_text())
    # The tiny model; 64x64 instead of the files' 512x512 (the same code path, 64x fewer pixels
    # on a 2-core CPU). Every other field as published.
    model = tiny_sdxl if name.startswith("sdxl") else tiny_sd
    return {**data, "model_id": str(model), "width": 64, "height": 64}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_reference_default_file_runs_over_trickle(
    engine_factory, orchestrator, http, tiny_streamdiffusion_dir, tiny_sdxl, name: str
) -> None:
    engine = await engine_factory(config=DIFFUSION_CONFIG)
    segments = make_ts_segments(frames=60, width=64, height=64, audio=False)
    params = _params(name, tiny_streamdiffusion_dir, tiny_sdxl)
    stream = f"ref-{name}"
    model_id = "streamdiffusion-" + name.replace("_", "-")

    async def same_file_again(control: TricklePublisher) -> None:
        await send_params(engine, stream, control, params)

    frames, evs = await run_live_stream(engine, orchestrator, http, stream, model_id, params, segments, same_file_again)

    assert len(frames) == 60 and {f.shape for f in frames} == {(64, 64, 3)}
    assert min(float(f.std()) for f in frames) > 8  # never a blank frame, update included
    assert [e for e in evs if e["type"] == "error"] == []
    final = [e for e in evs if e["type"] == "status"][-1]
    assert final["final"] and final["error"] is None and final["control_messages"] == 1
    assert len(final["params"]["controlnets"]) == len(params["controlnets"])  # accepted as sent
    listed = {w["field"] for w in final["warnings"]}
    assert listed == EXPECTED[name], final["warnings"]
    assert final["pipeline_status"]["family"] == ("sdxl" if name.startswith("sdxl") else "sd21")
    warned = [e for e in evs if e["type"] == "warning"]
    assert sorted(e["field"] for e in warned) == sorted(EXPECTED[name])  # once each
    assert all(e["message"] for e in warned)
