"""TextToImagePipeline on the tiny random-weight SD model, loaded from disk via from_pretrained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.batch.text_to_image import (
    GeneratedImage,
    TextToImageInput,
    TextToImagePipeline,
    _split_prompt,
    is_lightning_model,
    is_turbo_model,
)
from pipelines.errors import InvalidRequestError, ModelLoadError
from pipelines.registry import PipelineRegistry

# Small and quick: the tiny UNet at 64x64 with 2 steps.
FAST: dict[str, Any] = {"height": 64, "width": 64, "num_inference_steps": 2}


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(image.image)


def test_loads_as_stable_diffusion(t2i_pipeline: TextToImagePipeline, tiny_t2i_dir: Path) -> None:
    assert t2i_pipeline.task == "text-to-image"
    assert t2i_pipeline.model_id == str(tiny_t2i_dir)
    assert t2i_pipeline.pipeline_class == "StableDiffusionPipeline"
    assert t2i_pipeline.device.type == "cpu"


def test_same_seed_same_pixels_and_seed_plus_i(t2i_pipeline: TextToImagePipeline) -> None:
    images = t2i_pipeline.generate(TextToImageInput(prompt="a red fox", seed=42, num_images_per_prompt=2, **FAST))
    assert [i.seed for i in images] == [42, 43]
    assert all(i.image.size == (64, 64) and i.image.mode == "RGB" for i in images)
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))
    again = t2i_pipeline.generate(TextToImageInput(prompt="a red fox", seed=42, **FAST))
    assert np.array_equal(pixels(again[0]), pixels(images[0]))
    # Image i of a batch is the image a single request with seed+i gives: one at a time.
    second = t2i_pipeline.generate(TextToImageInput(prompt="a red fox", seed=43, **FAST))
    assert np.array_equal(pixels(second[0]), pixels(images[1]))


def test_random_seed_when_absent(t2i_pipeline: TextToImagePipeline) -> None:
    images = t2i_pipeline.generate(TextToImageInput(prompt="x", num_images_per_prompt=2, **FAST))
    assert 0 <= images[0].seed < 2**32
    assert images[1].seed == images[0].seed + 1
    assert all(i.nsfw is False for i in images)


def test_size_steps_and_guidance_are_honoured(t2i_pipeline: TextToImagePipeline) -> None:
    [wide] = t2i_pipeline.generate(TextToImageInput(prompt="x", seed=1, height=32, width=72, num_inference_steps=1))
    assert wide.image.size == (72, 32)
    base: dict[str, Any] = dict(prompt="x", seed=1, **FAST)
    [two] = t2i_pipeline.generate(TextToImageInput(**base))
    [three] = t2i_pipeline.generate(TextToImageInput(**{**base, "num_inference_steps": 3}))
    [no_cfg] = t2i_pipeline.generate(TextToImageInput(**base, guidance_scale=0.0))
    assert not np.array_equal(pixels(two), pixels(three))
    assert not np.array_equal(pixels(two), pixels(no_cfg))


def test_negative_prompt_and_split_prompt(t2i_pipeline: TextToImagePipeline) -> None:
    base: dict[str, Any] = dict(prompt="a cat", seed=5, **FAST)
    [plain] = t2i_pipeline.generate(TextToImageInput(**base))
    [negative] = t2i_pipeline.generate(TextToImageInput(**base, negative_prompt="blurry"))
    assert not np.array_equal(pixels(plain), pixels(negative))
    # One text encoder: a `|` prompt reaches the model verbatim rather than failing.
    [piped] = t2i_pipeline.generate(TextToImageInput(prompt="a cat | a dog", seed=5, **FAST))
    assert piped.image.size == (64, 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"height": 60}, "multiples of 8 but are 60 and 64"),
        ({"width": 100}, "multiples of 8 but are 64 and 100"),
        ({"height": 0}, "multiples of 8"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt must be at least 1, got 0"),
        ({"prompt": "  "}, "prompt must not be empty"),
        ({"loras": "{not json"}, "Unable to parse loras"),
        ({"loras": '{"a/b": -1}'}, "must be a number >= 0.0"),
        ({"loras": '{"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}'}, "Too many LoRAs: 5 given, at most 4"),
        ({"loras": '["a/b"]'}, "must be a JSON object"),
    ],
)
def test_invalid_requests(t2i_pipeline: TextToImagePipeline, changes: dict[str, object], message: str) -> None:
    request = TextToImageInput(**{"prompt": "x", **FAST, **changes})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match=message):
        t2i_pipeline.generate(request)


def test_loras_need_peft_or_load(t2i_pipeline: TextToImagePipeline) -> None:
    from diffusers.utils import is_peft_available

    request = TextToImageInput(prompt="x", loras='{"nobody/no-such-lora": 0.8}', **FAST)
    expected = "Unable to load LoRA 'nobody/no-such-lora'" if is_peft_available() else "peft"
    with pytest.raises(InvalidRequestError, match=expected):
        t2i_pipeline.generate(request)
    # Empty loras is fine afterwards.
    assert len(t2i_pipeline.generate(TextToImageInput(prompt="x", loras="", seed=1, **FAST))) == 1


def test_turbo_and_lightning_ids() -> None:
    assert is_turbo_model("stabilityai/sdxl-turbo") and is_turbo_model("stabilityai/sd-turbo")
    assert not is_turbo_model("runwayml/stable-diffusion-v1-5")
    assert is_lightning_model("ByteDance/SDXL-Lightning-4step")
    assert not is_lightning_model("ByteDance/SDXLLightning")


def test_turbo_model_runs_without_guidance(tiny_t2i_dir: Path, tmp_path: Path) -> None:
    turbo_dir = tmp_path / "tiny-sd-turbo"
    turbo_dir.symlink_to(tiny_t2i_dir, target_is_directory=True)
    turbo = TextToImagePipeline(str(turbo_dir), device="cpu")
    plain = TextToImagePipeline(str(tiny_t2i_dir), device="cpu")
    request = TextToImageInput(prompt="x", seed=3, guidance_scale=7.5, **FAST)
    [forced] = turbo.generate(request)
    [zero] = plain.generate(TextToImageInput(prompt="x", seed=3, guidance_scale=0.0, **FAST))
    assert np.array_equal(pixels(forced), pixels(zero))


def test_split_prompt_like_ai_runner() -> None:
    assert _split_prompt("a | b |c", "prompt") == {"prompt": "a", "prompt_2": "b", "prompt_3": "c"}
    assert _split_prompt("a|b|c|d", "prompt") == {"prompt": "a", "prompt_2": "b", "prompt_3": "c|d"}
    assert _split_prompt("", "negative_prompt") == {}


def test_unknown_model_fails_fast() -> None:
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        TextToImagePipeline("nobody/no-such-model", device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        TextToImagePipeline("/no/such/folder", device="cpu")


def test_folder_that_is_not_a_diffusers_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Could not load text-to-image model"):
        TextToImagePipeline(str(tmp_path), device="cpu")


async def test_registry_runs_the_real_pipeline(tiny_t2i_dir: Path) -> None:
    registry = PipelineRegistry(
        model_dir=tiny_t2i_dir.parent, default_models={}, pinned=("text-to-image", tiny_t2i_dir.name), max_queue=2
    )
    assert registry.health == "LOADING"
    await registry.start()
    request = TextToImageInput(prompt="a boat", seed=9, **FAST)
    model_id = registry.resolve_model_id("text-to-image", "")
    images = await registry.run("text-to-image", model_id, lambda p: p.generate(request))
    assert registry.health == "OK"
    assert [i.seed for i in images] == [9]
    with pytest.raises(InvalidRequestError):
        await registry.run("text-to-image", model_id, lambda p: p.generate(TextToImageInput(prompt="x", height=63)))
    await registry.aclose()


@pytest.mark.gpu
def test_cuda_float16(tiny_t2i_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    pipeline = TextToImagePipeline(str(tiny_t2i_dir))
    assert pipeline.device.type == "cuda"
    assert pipeline.dtype == torch.float16
    images = pipeline.generate(TextToImageInput(prompt="x", seed=4, num_images_per_prompt=2, **FAST))
    again = pipeline.generate(TextToImageInput(prompt="x", seed=5, **FAST))
    assert [i.seed for i in images] == [4, 5]
    assert np.array_equal(pixels(images[1]), pixels(again[0]))
