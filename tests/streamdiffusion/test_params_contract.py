"""ai-runner's `streamdiffusion` param contract (shared/reference/streamdiffusion-params.md):
the verified examples, the six default files, variant names, blending against a direct
computation, and the parts that run off with a warning (features of parts 5-6, TensorRT
fallback, the safety checker's classifier, the style image)."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sd_helpers import frames_of

from pipelines.live import default_live_registry
from pipelines.live.aux_models import AUX_MODEL_DEFAULTS, AuxModels, parse_aux_models
from pipelines.live.streamdiffusion_features import feature_warnings, fetch_style_image
from pipelines.live.streamdiffusion_params import VARIANTS, StreamDiffusionParams

DATA = Path(__file__).parent / "data"
REFERENCE_FILES = ("sdturbo", "sd15", "sd15_v2v", "sdxl", "sdxl_faceid", "sdxl_v2v")

SD15_CANNY = {"model_id": "lllyasviel/control_v11p_sd15_canny"}
SDXL_CNS = [
    {"model_id": m}
    for m in (
        "xinsir/controlnet-depth-sdxl-1.0",
        "xinsir/controlnet-canny-sdxl-1.0",
        "xinsir/controlnet-tile-sdxl-1.0",
        "daydreamlive/TemporalNet2-stable-diffusion-xl-base-1.0",
    )
]
SDXL = {"model_id": "stabilityai/sdxl-turbo"}
SD21_CN = {"model_id": "thibaud/controlnet-sd21-canny-diffusers"}

# The reference's "verified examples" (§1.6): (params, accepted, words of the rejection).
VERIFIED: list[tuple[str, dict[str, Any], bool, str]] = [
    ("t_index_list [50]", {"t_index_list": [50]}, True, ""),
    ("t_index_list [51]", {"t_index_list": [51]}, False, "t_index_list values must be in [0, num_inference_steps=50]"),
    ("t_index_list []", {"t_index_list": []}, False, "between 1 and 4 elements"),
    ("t_index_list 5 items", {"t_index_list": [1, 2, 3, 4, 5]}, False, "between 1 and 4 elements"),
    ("t_index_list [30, 20]", {"t_index_list": [30, 20]}, False, "non-decreasing"),
    ("width 1000", {"width": 1000}, False, "multiple of 64"),
    ("width 320", {"width": 320}, False, "384..1024"),
    ("seed -1", {"seed": -1}, True, ""),
    ("guidance 25", {"guidance_scale": 25}, True, ""),
    ("delta -3", {"delta": -3}, True, ""),
    ("prompt []", {"prompt": []}, True, ""),
    ("negative prompt weight", {"prompt": [["a", -1]]}, True, ""),
    ("unknown key", {"interval_sec": 3}, False, "Extra inputs are not permitted"),
    ("model runwayml", {"model_id": "runwayml/stable-diffusion-v1-5"}, False, ""),
    ("sd15 canny on sd-turbo", {"controlnets": [SD15_CANNY]}, False, "Invalid ControlNets for model stabilityai/sd-turbo"),
    ("4 SDXL ControlNets", {**SDXL, "controlnets": SDXL_CNS}, False, "at most 3 enabled ControlNets"),
    ("3 of 4 SDXL enabled", {**SDXL, "controlnets": [*SDXL_CNS[:3], {**SDXL_CNS[3], "enabled": False}]}, True, ""),
    ("interval 1441", {"cached_attention": {"enabled": False, "interval": 1441}}, False, "interval"),
    ("max_frames 5", {"cached_attention": {"enabled": False, "max_frames": 5}}, False, "max_frames"),
    ("conditioning_channels 7", {"controlnets": [{**SD21_CN, "conditioning_channels": 7}]}, False, "conditioning_channels"),
    ("latent canny", {"latent_preprocessing": {"processors": [{"type": "canny"}]}}, False, "latent_feedback"),
    ("bad weight_type", {"ip_adapter": {"enabled": False, "weight_type": "heavy"}}, False, "weight_type"),
    ("style url not a url", {"ip_adapter_style_image_url": "not a url"}, True, ""),
    ("filter threshold 5", {"similar_image_filter_threshold": 5}, True, ""),
    # and the other validators of §1.6
    ("duplicate ControlNets", {"controlnets": [SD21_CN, SD21_CN]}, False, "duplicate ControlNet model_id"),
    ("IP-Adapter on sd-turbo", {"ip_adapter": {"enabled": True}}, False, "IPAdapter is not supported for stabilityai/sd-turbo"),
    ("IP-Adapter on sd15", {"model_id": "Lykon/dreamshaper-8", "ip_adapter": {"enabled": True}}, True, ""),
    ("cached attention without tensorrt", {"cached_attention": {"enabled": True}, "acceleration": "none"}, False, "tensorrt"),
    (
        "cached attention SDXL 2 steps 3 frames",
        {**SDXL, "acceleration": "tensorrt", "t_index_list": [10, 20], "cached_attention": {"max_frames": 3}},
        False,
        "max_frames up to 2",
    ),
    ("width 640 on a reference id", {"width": 640, "height": 384}, True, ""),
]


@pytest.mark.parametrize(("case", "params", "accepted", "words"), VERIFIED, ids=[v[0] for v in VERIFIED])
def test_verified_examples(case: str, params: dict[str, Any], accepted: bool, words: str) -> None:
    if case == "model runwayml":
        # We accept any Hugging Face id or folder (the architecture decides at load); the
        # reference's Literal of four ids is where we differ (docs/realtime-diffusion.md).
        assert StreamDiffusionParams(**params).reference_family() is None
        return
    if accepted:
        StreamDiffusionParams(**params)
        return
    with pytest.raises(ValidationError) as info:
        StreamDiffusionParams(**params)
    assert words in str(info.value), str(info.value)


def test_other_ids_follow_the_architecture_sizes() -> None:
    StreamDiffusionParams(model_id="/models/mine", width=72, height=1000)  # 64..1024, step 8
    with pytest.raises(ValidationError):
        StreamDiffusionParams(model_id="/models/mine", width=60)
    with pytest.raises(ValidationError):
        StreamDiffusionParams(model_id="/models/mine", width=100)
    # ControlNet family lists apply to the reference's ids only; other ids are checked at load.
    StreamDiffusionParams(model_id="/models/mine", controlnets=[SD15_CANNY, SD21_CN])


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_reference_default_files_validate_for_their_variant(name: str) -> None:
    data = json.loads((DATA / f"{name}.json").read_text())
    variant = VARIANTS["streamdiffusion-" + name.replace("_", "-")]
    params = variant(**data)
    # the variant's own defaults are the file's values, so an omitted field changes nothing
    defaults = variant()
    for field in ("model_id", "t_index_list", "controlnets", "ip_adapter", "cached_attention", "use_safety_checker", "acceleration"):
        assert getattr(defaults, field) == getattr(params, field), field


def test_variant_names_in_the_registry() -> None:
    registry = default_live_registry()
    for name in VARIANTS:
        assert name in registry
    assert registry.get("streamdiffusion-sdxl-faceid").params_model().ip_adapter.type == "faceid"
    assert registry.get("streamdiffusion-sd15-v2v").params_model().cached_attention.enabled


def test_feature_warnings_list_what_runs_off() -> None:
    data = json.loads((DATA / "sd15_v2v.json").read_text())
    warnings = feature_warnings(VARIANTS["streamdiffusion-sd15-v2v"](**data), family="sd21")
    # ControlNets run (part 5): what of them cannot is the pipeline's warning (test_controlnets)
    # the regular IP-Adapter and cached attention run (part 6): what of them cannot (an adapter
    # that does not load or fit, a backend without their inputs) is the pipeline's warning
    assert warnings == {}
    assert feature_warnings(VARIANTS["streamdiffusion-sdxl-faceid"](), family="sdxl") == {}  # FaceID runs too
    assert feature_warnings(StreamDiffusionParams()) == {}  # new fields at their "off" values


# --- blending against a direct computation ------------------------------------------------


def _slerp(a: Any, b: Any, t: float) -> Any:
    import torch

    cos = float(torch.dot(a.flatten().double() / a.norm(), b.flatten().double() / b.norm()))
    theta = math.acos(max(-1.0, min(1.0, cos)))
    return (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)


def test_prompt_blend_matches_the_reference() -> None:
    import torch

    from pipelines.live.stream_batch import blend

    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(1, 77, 16, generator=gen) for _ in range(3))
    # exactly two entries, slerp: t = the second normalised weight
    assert torch.allclose(blend([a, b], [3.0, 1.0], method="slerp"), _slerp(a, b, 0.25), atol=1e-5)
    # three entries: a weighted sum even with slerp
    expect = (a * 1 + b * 2 + c * 1) / 4
    assert torch.allclose(blend([a, b, c], [1.0, 2.0, 1.0], method="slerp"), expect, atol=1e-6)
    # not normalised: raw weights
    assert torch.allclose(blend([a, b, c], [1.0, 2.0, 1.0], method="linear", normalize=False), a + 2 * b + c, atol=1e-6)
    # weights summing to 0 are left as they are
    assert torch.allclose(blend([a, b], [1.0, -1.0], method="linear"), a - b, atol=1e-6)


def test_seed_blend_keeps_the_noise_magnitude() -> None:
    import torch

    from pipelines.live.stream_batch import make_noise

    shape = (2, 4, 8, 8)
    n1 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    n2 = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    got = make_noise(shape, [(1, 0.6), (2, 0.4)], method="linear", normalize=True)
    direct = 0.6 * n1 + 0.4 * n2
    direct = direct * ((n1.norm() + n2.norm()) / 2 / direct.norm())
    assert torch.allclose(got, direct, atol=1e-5)
    assert torch.allclose(make_noise(shape, [(1, 0.6), (2, 0.4)], method="slerp"), _slerp(n1, n2, 0.4).float(), atol=1e-5)
    # negative seeds run (as the reference accepts them)
    assert make_noise(shape, [(-1, 1.0)]).shape == shape


# --- aux models, style image -----------------------------------------------------------------


def test_aux_model_map(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_aux_models("safety=/m/nsfw, depth = /m/depth") == {"safety": "/m/nsfw", "depth": "/m/depth"}
    with pytest.raises(ValueError, match="unknown auxiliary model kind"):
        parse_aux_models("colour=/x")
    with pytest.raises(ValueError, match="KIND="):
        parse_aux_models("safety")
    monkeypatch.setenv("AUX_MODELS", "safety=/env/nsfw")
    env = AuxModels.from_env()
    assert env.id("safety") == "/env/nsfw" and env.id("depth") == AUX_MODEL_DEFAULTS["depth"]
    assert AuxModels({"safety": "/cli/nsfw"}).id("safety") == "/cli/nsfw"
    with pytest.raises(ValueError, match="unknown auxiliary model kind"):
        AuxModels({"colour": "/x"})


def test_style_image_sources() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format="PNG")
    raw = base64.b64encode(buf.getvalue()).decode()
    assert fetch_style_image(f"data:image/png;base64,{raw}").size == (4, 4)
    assert fetch_style_image(raw).getpixel((0, 0)) == (200, 10, 10)
    with pytest.raises(ValueError, match="Invalid base64"):
        fetch_style_image("not a url")
    with pytest.raises(ValueError, match="Invalid data URI"):
        fetch_style_image("data:text/plain,hello")
    with pytest.raises(ValueError, match="Failed to fetch image from URL"):
        fetch_style_image("http://127.0.0.1:9/nothing.png", timeout=1.0)


# --- the pipeline: warnings, TensorRT fallback, safety checker -------------------------------


@pytest.fixture(scope="module")
def tiny_safety(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("aux") / "tiny-safety"
    write_tiny_model("safety", out)
    return out


def test_pipeline_runs_the_sd15_file_off_with_warnings(make_pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.loads((DATA / "sd15.json").read_text())
    fetched: list[str] = []
    monkeypatch.setattr("pipelines.live.streamdiffusion.fetch_style_image", _failing_fetch(fetched))
    pipe = make_pipeline(**_tiny(data))
    out = pipe.process(frames_of(1))
    assert out.shape == (1, 64, 64, 3) and float(out.float().std()) > 5
    warnings = {w["field"]: w["message"] for w in pipe.status()["warnings"]}
    assert set(warnings) == {"acceleration", "controlnets", "ip_adapter", "ip_adapter_style_image_url"}, warnings
    assert "TensorRT is not available" in warnings["acceleration"] and pipe.status()["backend"] == "eager"
    assert fetched == [data["ip_adapter_style_image_url"]]
    # no fetch while the adapter is disabled; the warnings follow the params live
    pipe.update_params(pipe.params.model_copy(update={"ip_adapter": pipe.params.ip_adapter.model_copy(update={"enabled": False}), "controlnets": []}))
    assert {w["field"] for w in pipe.status()["warnings"]} == {"acceleration"}
    pipe.update_params(pipe.params.model_copy(update={"ip_adapter_style_image_url": "data:image/png;base64,xx"}))
    assert len(fetched) == 1


def _tiny(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "width": 64, "height": 64, "model_id": _TINY[0]}


_TINY: list[str] = [""]


@pytest.fixture(autouse=True)
def _tiny_id(tiny_sd_dir: Path) -> None:
    _TINY[0] = str(tiny_sd_dir)


def _failing_fetch(seen: list[str]) -> Any:
    def fetch(url: str) -> Any:
        seen.append(url)
        raise ValueError(f"Failed to fetch image from URL: {url}: offline")

    return fetch


def test_safety_checker_replaces_flagged_frames_and_toggles_live(
    make_pipeline: Any, tiny_safety: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv("AUX_MODELS", f"safety={tiny_safety}")
    pipe = make_pipeline(prompt="a cat", use_safety_checker=True, safety_checker_threshold=2.0)  # never flags
    first = pipe.process(frames_of(1))
    assert pipe.status()["safety_checker"]["loaded"] and pipe.status()["warnings"] == []
    pipe.update_params(pipe.params.model_copy(update={"safety_checker_threshold": -1.0}))  # flags everything
    flagged = pipe.process(frames_of(2))
    assert torch.equal(flagged, first)  # the last safe frame
    assert pipe.status()["safety_checker"]["flagged"] == 1
    pipe.update_params(pipe.params.model_copy(update={"use_safety_checker": False}))
    assert not torch.equal(pipe.process(frames_of(3)), first)


def test_safety_checker_model_missing_is_a_warning(make_pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUX_MODELS", f"safety={tmp_path / 'missing'}")
    pipe = make_pipeline(use_safety_checker=True)
    assert float(pipe.process(frames_of(1)).float().std()) > 5
    (warning,) = pipe.status()["warnings"]
    assert warning["field"] == "use_safety_checker" and "frames are not checked" in warning["message"]
