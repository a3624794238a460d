"""SDXL(-Turbo) in the stream batch (part 5): ai-runner's `sdxl` file on a tiny random-weight
SDXL (two text encoders, text/time embeddings, TAESD) with a distinct tiny SDXL ControlNet per
entry; SD ControlNets on it are refused with a warning; two SDXL streams batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sd_helpers import frames_of

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pipelines.testing import write_tiny_model
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    root = tmp_path_factory.mktemp("sdxl")
    out = {"model": root / "tiny-sdxl"}
    write_tiny_model("streamdiffusion-sdxl", out["model"])
    for i, cn in enumerate(json.loads((DATA / "sdxl.json").read_text())["controlnets"]):
        out[cn["model_id"]] = root / f"cn-{i}"
        write_tiny_controlnet(out[cn["model_id"]], sdxl=True, seed=30 + i)
    out["sd-cn"] = root / "sd-cn"
    write_tiny_controlnet(out["sd-cn"])
    return out


def _pipe(params: dict[str, Any], pool: Any = None) -> Any:
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import VARIANTS

    pipe = StreamDiffusionPipeline(device="cpu", pool=pool)
    pipe.load(VARIANTS["streamdiffusion-sdxl"](**params))
    return pipe


def test_sdxl_file_runs_with_its_controlnets(tiny_sdxl: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr("pipelines.live.streamdiffusion.fetch_style_image", _no_network)
    data = json.loads((DATA / "sdxl.json").read_text())
    cns = [{**cn, "model_id": str(tiny_sdxl[cn["model_id"]])} for cn in data["controlnets"]]
    params = {**data, "model_id": str(tiny_sdxl["model"]), "width": 64, "height": 64, "controlnets": cns}
    pipe = _pipe(params)
    status = pipe.status()
    assert status["family"] == "sdxl" and status["distilled"] and status["vae"].startswith("taesd")
    assert [c["loaded"] for c in status["controlnets"]] == [True, True, True]
    frames = frames_of(7, 3)
    outs = [pipe.process(frames[i : i + 1]) for i in range(3)]
    assert all(o.shape == (1, 64, 64, 3) and float(o.float().std()) > 5 for o in outs)
    warnings = pipe.warnings
    assert set(warnings) == {"acceleration", "controlnets", "ip_adapter", "ip_adapter_style_image_url"}, warnings
    assert "depth_tensorrt: the depth model" in warnings["controlnets"] and "canny" not in warnings["controlnets"]
    # the ControlNets are fed: all at scale 0 gives another picture
    off_params = {**pipe.params.model_dump(), "controlnets": [{**c, "conditioning_scale": 0.0} for c in cns]}
    pipe.update_params(type(pipe.params)(**off_params))
    off = [pipe.process(frames[i : i + 1]) for i in range(3)]
    assert not torch.equal(off[-1], outs[-1])
    # a prompt change is applied (both encoders, pooled embedding included)
    before = pipe._embed("flowers")
    assert before.shape == (1, 78, 64)
    pipe.close()


def test_sd_controlnet_does_not_fit_sdxl(tiny_sdxl: dict[str, Path]) -> None:
    pipe = _pipe({"model_id": str(tiny_sdxl["model"]), "width": 64, "height": 64, "controlnets": [{"model_id": str(tiny_sdxl["sd-cn"])}]})
    assert "does not fit this sdxl model" in pipe.warnings["controlnets"]
    assert pipe.process(frames_of(1)).shape == (1, 64, 64, 3)
    pipe.close()


def test_two_sdxl_streams_batch_as_alone(tiny_sdxl: dict[str, Path]) -> None:
    import torch

    from pipelines.live.stream_batch import step

    a = _pipe({"model_id": str(tiny_sdxl["model"]), "width": 64, "height": 64, "prompt": "a", "seed": 1})
    b = _pipe({"model_id": str(tiny_sdxl["model"]), "width": 64, "height": 64, "prompt": "b", "seed": 2})
    ma, mb = a._models, b._models
    assert ma is not None and mb is not None

    def state(pipe: Any, m: Any) -> Any:
        return pipe._worker.call(pipe._slot._new_state, m, (4, 8, 8))

    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        sa, sb = state(a, ma), state(b, mb)
        together = step(ma.backend, [(sa, latent), (sb, latent)])
        alone = [step(ma.backend, [(state(a, ma), latent)])[0], step(ma.backend, [(state(b, mb), latent)])[0]]
    for x, y in zip(together, alone, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    assert not torch.equal(together[0], together[1])
    a.close()
    b.close()


def _no_network(url: str) -> Any:
    raise ValueError(f"Failed to fetch image from URL: {url}: no network")
