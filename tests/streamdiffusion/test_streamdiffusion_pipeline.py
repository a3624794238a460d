"""The `streamdiffusion` live pipeline on the tiny model: loading, frames, filter, live updates."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from sd_helpers import apply_params, frames_of

from pipelines.errors import ModelLoadError
from pipelines.live import default_live_registry
from pipelines.live.similarity_filter import SimilarityFilter, skip_probability
from pipelines.live.streamdiffusion_params import StreamDiffusionParams, StreamDiffusionSD15Params


def _not_blank(frame: torch.Tensor) -> None:
    """A real picture: not one flat colour, not mid-grey everywhere."""
    f = frame.float()
    assert f.std() > 8, f"flat frame (std {float(f.std()):.1f})"
    assert (f - 128).abs().mean() > 4 or f.std() > 20


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def test_tiny_model_layout_and_both_vaes(tiny_sd_dir: Path, make_pipeline: Any) -> None:
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "taesd"):
        assert (tiny_sd_dir / part).is_dir(), part
    frame = frames_of(0)
    tiny = make_pipeline(vae_id=str(tiny_sd_dir / "taesd"))
    full = make_pipeline(use_tiny_vae=False)
    assert tiny.status()["vae"].startswith("taesd") and full.status()["vae"] == "full"
    a, b = tiny.process(frame), full.process(frame)
    assert a.shape == b.shape == (1, 64, 64, 3) and a.dtype == torch.uint8
    _not_blank(a[0])
    _not_blank(b[0])
    # sd-turbo family: distilled, so no LCM-LoRA even though use_lcm_lora defaults to True.
    st = tiny.status()
    assert st["family"] == "sd21" and st["distilled"] and st["loras"] == []


def test_frames_are_restyled_and_status_reports_warmup(make_pipeline: Any) -> None:
    pipe = make_pipeline(prompt="a cat", t_index_list=[20, 35])
    st = pipe.status()
    assert st["load_ms"] > 0 and st["warmup_ms"] > 0 and st["time_to_first_frame_ms"] is None
    frames = frames_of(1, count=2)
    out = pipe.process(frames)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    assert _diff(out, frames) > 10
    for f in out:
        _not_blank(f)
    st = pipe.status()
    assert st["first_frame_ms"] > 0 and st["time_to_first_frame_ms"] >= st["load_ms"]
    assert st["frames"] == 2 and st["unet_batch"] == 2 and st["backend"] == "eager"


def test_similarity_filter_skips_identical_frames(make_pipeline: Any) -> None:
    pipe = make_pipeline(enable_similar_image_filter=True, similar_image_filter_max_skip_frame=3)
    frame = frames_of(2)
    first = pipe.process(frame)
    repeats = [pipe.process(frame) for _ in range(4)]
    # Identical frames: skip probability 1, capped at 3 in a row, then one is processed.
    assert pipe.status()["frames_skipped"] == 3
    assert all(torch.equal(r, first) for r in repeats[:3])
    other = pipe.process(255 - frame)  # a different frame is never skipped
    assert pipe.status()["frames_skipped"] == 3 and not torch.equal(other, first)


def test_similarity_filter_probability() -> None:
    assert skip_probability(1.0, 0.98) == 1.0
    assert skip_probability(0.99, 0.98) == pytest.approx(0.5)
    assert skip_probability(0.97, 0.98) == 0.0
    f = SimilarityFilter(threshold=0.98, max_skip_frame=2)
    x = torch.rand(3, 8, 8)
    assert [f.should_skip(x) for _ in range(7)] == [False, True, True, False, True, True, False]
    assert not f.should_skip(-x)


CHANGES: list[dict[str, Any]] = [
    {"prompt": "a dog in the snow"},
    {"prompt": [["a dog in the snow", 0.5], ["fire", 0.5]]},
    {"seed": 12345},
    {"seed": [[1, 0.5], [2, 0.5]], "seed_interpolation_method": "slerp"},
    {"guidance_scale": 2.5},
    {"delta": 0.2},
    {"t_index_list": [5, 40]},
    {"t_index_list": [15]},
    {"t_index_list": [10, 20, 30, 45]},
    {"num_inference_steps": 20, "t_index_list": [3, 9, 15]},
    {"cfg_type": "full", "negative_prompt": "ugly"},
    {"negative_prompt": "green"},
    {"cfg_type": "initialize"},
    {"cfg_type": "none"},
]


def test_updates_take_effect_on_the_next_frame_without_blank_frames(make_pipeline: Any) -> None:
    params = dict(prompt="a cat", t_index_list=[20, 35], guidance_scale=1.8, cfg_type="self", prompt_transition_frames=2)
    pipe = make_pipeline(**params)
    frame = frames_of(3)
    for _ in range(3):
        pipe.process(frame)
    current = StreamDiffusionParams(model_id=pipe.params.model_id, **params)
    for change in CHANGES:
        saved = copy.deepcopy(pipe._slot.__dict__)  # the same stream without the update
        unchanged = pipe.process(frame)
        pipe._slot.__dict__.update(saved)
        current = StreamDiffusionParams.model_validate({**current.model_dump(), **change})
        pipe.update_params(current)
        out = pipe.process(frame)
        assert _diff(out, unchanged) > 0.3, change
        _not_blank(out[0])
        for _ in range(2):
            _not_blank(pipe.process(frame)[0])
    assert pipe.status()["reloads"] == 0


def test_prompt_change_blends_over_frames(make_pipeline: Any) -> None:
    pipe = make_pipeline(prompt="a cat", prompt_transition_frames=4, t_index_list=[30])
    frame = frames_of(4)
    pipe.process(frame)
    old = pipe._slot.state.cond.clone()
    pipe.update_params(pipe.params.model_copy(update={"prompt": "fire"}))
    target = pipe._embed("fire")
    distances = []
    for _ in range(5):
        pipe.process(frame)
        distances.append(float((pipe._slot.state.cond - target).norm()))
    start = float((old - target).norm())
    assert start > distances[0] > distances[1] > distances[2] > distances[3] == 0.0 == distances[4]


def test_bad_update_keeps_last_good_params(make_pipeline: Any, tmp_path: Path) -> None:
    pipe = make_pipeline(prompt="a cat")
    frame = frames_of(5)
    before = pipe.process(frame)
    good = pipe.params
    with pytest.raises(ModelLoadError):
        apply_params(pipe, good.model_copy(update={"model_id": str(tmp_path / "missing")}))
    assert pipe.params is good
    _not_blank(pipe.process(frame)[0])
    assert pipe.process(frame).shape == before.shape
    with pytest.raises(ValueError):
        StreamDiffusionParams(t_index_list=[10, 5])
    with pytest.raises(ValueError):
        StreamDiffusionParams(t_index_list=[51])
    with pytest.raises(ValueError):
        StreamDiffusionParams(interval_sec=1)  # type: ignore[call-arg]  # unknown fields are rejected


def test_model_change_reloads_and_size_change_rewarms(make_pipeline: Any, tiny_sd_dir: Path) -> None:
    pipe = make_pipeline(prompt="a cat")
    pipe.process(frames_of(6))
    apply_params(pipe, pipe.params.model_copy(update={"use_tiny_vae": False}))
    assert pipe.status()["reloads"] == 1 and pipe.status()["vae"] == "full"
    _not_blank(pipe.process(frames_of(6))[0])
    pipe.warm(96, 64)
    out = pipe.process(frames_of(6, size=64)[:, :, :, :].repeat(1, 1, 2, 1)[:, :, :96])
    assert out.shape == (1, 64, 96, 3)
    _not_blank(out[0])


def test_skip_diffusion_passes_frames_through(make_pipeline: Any) -> None:
    pipe = make_pipeline(skip_diffusion=True)
    frame = frames_of(7)
    assert torch.equal(pipe.process(frame), frame)


def test_lcm_lora_is_fused_into_a_non_distilled_base(tmp_path: Path, tiny_sd_dir: Path) -> None:
    """An SD 1.5-family base (the tiny text-to-image model) with a tiny LCM-LoRA fused in."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.testing import write_tiny_model

    base = tmp_path / "sd15"
    write_tiny_model("text-to-image", base)
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    lora = tmp_path / "lcm-lora"
    StableDiffusionPipeline.save_lora_weights(
        lora, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    )
    common = dict(model_id=str(base), vae_id=str(tiny_sd_dir / "taesd"), t_index_list=[20, 35], width=64, height=64)
    frame = frames_of(8)
    outs = {}
    for use in (True, False):
        pipe = StreamDiffusionPipeline(device="cpu")
        pipe.load(StreamDiffusionParams(**common, use_lcm_lora=use, lcm_lora_id=str(lora)))
        st = pipe.status()
        assert st["family"] == "sd15" and not st["distilled"]
        assert st["loras"] == ([str(lora)] if use else [])
        outs[use] = pipe.process(frame)
        pipe.close()
    assert _diff(outs[True], outs[False]) > 0.3


def test_registry_names_and_variant_defaults() -> None:
    registry = default_live_registry()
    for name in ("streamdiffusion", "streamdiffusion-sdturbo", "streamdiffusion-sd15"):
        assert name in registry
    assert registry.get("streamdiffusion").params_model().model_id == "stabilityai/sd-turbo"
    sd15 = registry.get("streamdiffusion-sd15").params_model()
    assert isinstance(sd15, StreamDiffusionSD15Params) and sd15.model_id == "Lykon/dreamshaper-8"
    # Every streamdiffusion session of a registry draws on one worker pool (one model each).
    a, b = registry.get("streamdiffusion").factory(), registry.get("streamdiffusion-sd15").factory()
    assert getattr(a, "_pool") is getattr(b, "_pool")
