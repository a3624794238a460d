"""image-to-image, image-to-video and upscale on tiny random-weight models loaded via from_pretrained.

Families covered for real: SD 1.x (img2img), instruct-pix2pix, SDXL (text-to-image and
img2img), SDXL-Lightning as ai-runner loads it (SDXL base + swapped UNet), Turbo by id, Stable
Video Diffusion, the x4 upscaler, SD3 and FLUX (text-to-image and img2img).
"""

from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.batch.diffusion import ModelFamily, detect_family
from pipelines.batch.image_to_image import ImageToImageInput, ImageToImagePipeline
from pipelines.batch.image_to_video import ImageToVideoInput, ImageToVideoPipeline
from pipelines.batch.outputs import GeneratedImage
from pipelines.batch.text_to_image import TextToImageInput, TextToImagePipeline
from pipelines.batch.upscale import UpscaleInput, UpscalePipeline
from pipelines.errors import InferenceError, InvalidRequestError
from pipelines.testing import write_tiny_model


def tiny(factory: pytest.TempPathFactory, task: str) -> Path:
    """The tiny model of `task`, built once per session (the e2e tests use the same folders)."""
    out = factory.getbasetemp() / f"tiny-{task}"
    if not (out / "model_index.json").exists():
        write_tiny_model(task, out)
    return out


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    return Image.fromarray(np.concatenate(np.broadcast_arrays(x, y, 255 - x), axis=2))


def px(image: GeneratedImage | Image.Image) -> np.ndarray:
    return np.asarray(image.image if isinstance(image, GeneratedImage) else image)


@pytest.fixture(scope="module")
def sd_i2i(tmp_path_factory: pytest.TempPathFactory) -> ImageToImagePipeline:
    return ImageToImagePipeline(str(tiny(tmp_path_factory, "image-to-image")), device="cpu")


@pytest.fixture(scope="module")
def pix2pix(tmp_path_factory: pytest.TempPathFactory) -> ImageToImagePipeline:
    return ImageToImagePipeline(str(tiny(tmp_path_factory, "instruct-pix2pix")), device="cpu")


@pytest.fixture(scope="module")
def svd(tmp_path_factory: pytest.TempPathFactory) -> ImageToVideoPipeline:
    return ImageToVideoPipeline(str(tiny(tmp_path_factory, "image-to-video")), device="cpu")


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory: pytest.TempPathFactory) -> UpscalePipeline:
    return UpscalePipeline(str(tiny(tmp_path_factory, "upscale")), device="cpu")


I2I: dict[str, Any] = {"num_inference_steps": 2, "strength": 1.0}


# --- image-to-image: SD ---------------------------------------------------------------------


def test_sd_img2img_seeds_size_and_determinism(sd_i2i: ImageToImagePipeline) -> None:
    assert sd_i2i.pipeline_class == "StableDiffusionImg2ImgPipeline"
    assert sd_i2i.family == ModelFamily("sd")
    assert sd_i2i.dtype.is_floating_point and str(sd_i2i.dtype) == "torch.float32"
    image = gradient(72, 48)
    images = sd_i2i.generate(ImageToImageInput(prompt="a fox", image=image, seed=5, num_images_per_prompt=2, **I2I))
    assert [i.seed for i in images] == [5, 6]
    assert all(i.image.size == (72, 48) and i.image.mode == "RGB" and i.nsfw is False for i in images)
    assert not np.array_equal(px(images[0]), px(images[1]))
    [again] = sd_i2i.generate(ImageToImageInput(prompt="a fox", image=image, seed=6, **I2I))
    assert np.array_equal(px(again), px(images[1]))
    # Sides are rounded down to the VAE's scale factor (8 for real SD models, 2 for the tiny one).
    [odd] = sd_i2i.generate(ImageToImageInput(prompt="a fox", image=gradient(71, 51), seed=5, **I2I))
    assert odd.image.size == (70, 50)


def test_sd_img2img_parameters_are_honoured(sd_i2i: ImageToImagePipeline) -> None:
    base: dict[str, Any] = dict(prompt="a fox", image=gradient(), seed=1, num_inference_steps=4)
    outputs = {
        name: px(sd_i2i.generate(ImageToImageInput(**{**base, **change}))[0])
        for name, change in {
            "base": {},
            "strength": {"strength": 0.5},
            "guidance": {"guidance_scale": 1.0},
            "negative": {"negative_prompt": "blurry"},
            "steps": {"num_inference_steps": 3},
        }.items()
    }
    for name, pixels in outputs.items():
        if name != "base":
            assert not np.array_equal(pixels, outputs["base"]), name
    # Seed None: a random uint32, reported.
    [rand] = sd_i2i.generate(ImageToImageInput(prompt="x", image=gradient(), **I2I))
    assert 0 <= rand.seed < 2**32
    # An empty prompt is allowed here (as in ai-runner), unlike text-to-image.
    assert len(sd_i2i.generate(ImageToImageInput(prompt="", image=gradient(), seed=1, **I2I))) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strength": 1.5}, "strength must be between 0 and 1, got 1.5"),
        ({"strength": 0.2, "num_inference_steps": 2}, r"leaves no denoising step.*int\(steps x strength\) = 0"),
        ({"image": Image.new("RGB", (4, 64))}, "The input image is 4x64; each side must be at least 8"),
        ({"image": Image.new("RGB", (4100, 4100))}, "at most 16777216 are supported"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt must be at least 1, got 0"),
        ({"loras": "{oops"}, "Unable to parse loras"),
    ],
)
def test_img2img_invalid_requests(sd_i2i: ImageToImagePipeline, changes: dict[str, Any], message: str) -> None:
    request = ImageToImageInput(**{"prompt": "x", "image": gradient(), **I2I, **changes})
    with pytest.raises(InvalidRequestError, match=message):
        sd_i2i.generate(request)


def test_turbo_img2img_forces_guidance_and_a_step(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    turbo_dir = tmp_path / "tiny-sd-turbo"
    turbo_dir.symlink_to(tiny(tmp_path_factory, "image-to-image"), target_is_directory=True)
    turbo = ImageToImagePipeline(str(turbo_dir), device="cpu")
    assert turbo.family.turbo
    kwargs = turbo._call_kwargs(ImageToImageInput(prompt="x", image=gradient(), strength=0.2, num_inference_steps=2))
    # As ai-runner: guidance 0 and strength raised to 1/steps so one step runs.
    assert kwargs["guidance_scale"] == 0.0
    assert kwargs["strength"] == 0.5
    [image] = turbo.generate(ImageToImageInput(prompt="x", image=gradient(), seed=2, strength=0.2, num_inference_steps=2))
    assert image.image.size == (64, 64)


# --- image-to-image: instruct-pix2pix ---------------------------------------------------------


def test_pix2pix_honours_image_guidance_scale(pix2pix: ImageToImagePipeline) -> None:
    assert pix2pix.pipeline_class == "StableDiffusionInstructPix2PixPipeline"
    assert pix2pix.family.name == "pix2pix"
    assert type(pix2pix._pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    base: dict[str, Any] = dict(prompt="make it snow", image=gradient(), seed=3, num_inference_steps=2)
    [a] = pix2pix.generate(ImageToImageInput(**base, image_guidance_scale=1.5))
    [b] = pix2pix.generate(ImageToImageInput(**base, image_guidance_scale=3.0))
    [a2] = pix2pix.generate(ImageToImageInput(**base, image_guidance_scale=1.5))
    assert a.image.size == (64, 64)
    assert not np.array_equal(px(a), px(b))
    assert np.array_equal(px(a), px(a2))
    # strength is not a pix2pix parameter: it neither fails nor changes anything.
    [c] = pix2pix.generate(ImageToImageInput(**base, image_guidance_scale=1.5, strength=0.1))
    assert np.array_equal(px(a), px(c))


# --- SDXL, Lightning, FLUX rules --------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny(tmp_path_factory, "sdxl")


def test_sdxl_text_to_image_and_img2img(sdxl_dir: Path) -> None:
    t2i = TextToImagePipeline(str(sdxl_dir), device="cpu")
    assert t2i.pipeline_class == "StableDiffusionXLPipeline" and t2i.family.name == "sdxl"
    base: dict[str, Any] = dict(seed=4, height=64, width=48, num_inference_steps=2)
    [one] = t2i.generate(TextToImageInput(prompt="a cat", **base))
    [two] = t2i.generate(TextToImageInput(prompt="a cat | a dog", **base))
    assert one.image.size == (48, 64)
    # Two text encoders: `|` gives the second its own prompt.
    assert t2i._call_kwargs(TextToImageInput(prompt="a cat | a dog", **base))["prompt_2"] == "a dog"
    assert not np.array_equal(px(one), px(two))

    i2i = ImageToImagePipeline(str(sdxl_dir), device="cpu")
    assert i2i.pipeline_class == "StableDiffusionXLImg2ImgPipeline"
    [out] = i2i.generate(ImageToImageInput(prompt="a cat", image=gradient(), seed=1, **I2I))
    assert out.image.size == (64, 64)


def test_bytedance_lightning_loads_as_ai_runner_does(sdxl_dir: Path, tmp_path: Path) -> None:
    # ai-runner's layout: SDXL base, and the Lightning repo holding only UNet weights.
    from safetensors.torch import save_file

    from pipelines.batch.lightning import SDXL_BASE_ID, SDXL_LIGHTNING_ID

    shutil.copytree(sdxl_dir, tmp_path / SDXL_BASE_ID)
    weights = tmp_path / SDXL_LIGHTNING_ID
    weights.mkdir(parents=True)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sdxl_dir / "unet")
    save_file(unet.state_dict(), weights / "sdxl_lightning_4step_unet.safetensors")

    model_id = "ByteDance/SDXL-Lightning-4step"
    t2i = TextToImagePipeline(model_id, model_dir=tmp_path, device="cpu")
    assert t2i.family.lightning and t2i.pipeline_class == "StableDiffusionXLPipeline"
    assert t2i._pipe.scheduler.config.timestep_spacing == "trailing"
    kwargs = t2i._call_kwargs(TextToImageInput(prompt="x", guidance_scale=7.0, num_inference_steps=30, height=64, width=64))
    assert (kwargs["guidance_scale"], kwargs["num_inference_steps"]) == (0.0, 4)
    [image] = t2i.generate(TextToImageInput(prompt="x", seed=1, height=64, width=64))
    assert image.image.size == (64, 64)
    assert len(t2i._pipe.scheduler.timesteps) == 4

    i2i = ImageToImagePipeline(model_id, model_dir=tmp_path, device="cpu")
    assert i2i.pipeline_class == "StableDiffusionXLImg2ImgPipeline"
    [edited] = i2i.generate(ImageToImageInput(prompt="x", image=gradient(), seed=1, strength=0.5))
    assert edited.image.size == (64, 64)


def test_family_detection() -> None:
    assert detect_family("stabilityai/sdxl-turbo", "StableDiffusionXLPipeline") == ModelFamily("sdxl", turbo=True)
    assert detect_family("x", "StableDiffusion3Pipeline").name == "sd3"
    assert detect_family("black-forest-labs/FLUX.1-schnell", "FluxPipeline").name == "flux"
    assert detect_family("timbrooks/instruct-pix2pix", "").name == "pix2pix"
    assert detect_family("a/b", "StableDiffusionInstructPix2PixPipeline").name == "pix2pix"
    assert detect_family("a/b", "StableVideoDiffusionPipeline").name == "svd"
    assert detect_family("a/b", "StableDiffusionUpscalePipeline").name == "upscaler"
    assert detect_family("ByteDance/SDXL-Lightning-2step", "").lightning


def test_flux_text_to_image_and_img2img(tmp_path_factory: pytest.TempPathFactory) -> None:
    flux_dir = tiny(tmp_path_factory, "flux")
    t2i = TextToImagePipeline(str(flux_dir), device="cpu")
    assert t2i.pipeline_class == "FluxPipeline" and t2i.family.name == "flux"
    request = TextToImageInput(
        prompt="a cat", negative_prompt="blurry", seed=1, height=32, width=48, num_inference_steps=2
    )
    # As ai-runner: FLUX gets no negative prompt, so giving one changes nothing.
    assert "negative_prompt" not in t2i._call_kwargs(request)
    [with_negative] = t2i.generate(request)
    [without] = t2i.generate(dataclasses.replace(request, negative_prompt=""))
    assert with_negative.image.size == (48, 32)
    assert np.array_equal(px(with_negative), px(without))

    i2i = ImageToImagePipeline(str(flux_dir), device="cpu")
    assert i2i.pipeline_class == "FluxImg2ImgPipeline"
    # FLUX img2img would default to its native size; the input's (rounded to 16) is kept.
    [edited] = i2i.generate(ImageToImageInput(prompt="a cat", image=gradient(50, 32), seed=1, **I2I))
    assert edited.image.size == (48, 32)


def test_sd3_three_prompts_text_to_image_and_img2img(tmp_path_factory: pytest.TempPathFactory) -> None:
    sd3_dir = tiny(tmp_path_factory, "sd3")
    t2i = TextToImagePipeline(str(sd3_dir), device="cpu")
    assert t2i.pipeline_class == "StableDiffusion3Pipeline" and t2i.family.name == "sd3"
    request = TextToImageInput(
        prompt="a cat | a dog | a fox", negative_prompt="blurry | dark", seed=1, height=32, width=48, num_inference_steps=2
    )
    kwargs = t2i._call_kwargs(request)
    assert (kwargs["prompt"], kwargs["prompt_2"], kwargs["prompt_3"]) == ("a cat", "a dog", "a fox")
    assert (kwargs["negative_prompt"], kwargs["negative_prompt_2"]) == ("blurry", "dark")
    [image] = t2i.generate(request)
    assert image.image.size == (48, 32)
    i2i = ImageToImagePipeline(str(sd3_dir), device="cpu")
    assert i2i.pipeline_class == "StableDiffusion3Img2ImgPipeline"
    [edited] = i2i.generate(ImageToImageInput(prompt="a cat", image=gradient(40, 33), seed=1, **I2I))
    assert edited.image.size == (32, 32)


# --- image-to-video ---------------------------------------------------------------------------

SVD_FAST: dict[str, Any] = {"height": 32, "width": 48, "num_inference_steps": 2}


def test_svd_frames_seed_and_determinism(svd: ImageToVideoPipeline) -> None:
    assert svd.pipeline_class == "StableVideoDiffusionPipeline" and svd.num_frames == 4
    video = svd.generate(ImageToVideoInput(image=gradient(), seed=8, **SVD_FAST))
    assert (len(video.frames), video.seed, video.nsfw, video.fps) == (4, 8, False, 6)
    assert all(f.size == (48, 32) and f.mode == "RGB" for f in video.frames)
    again = svd.generate(ImageToVideoInput(image=gradient(), seed=8, **SVD_FAST))
    assert all(np.array_equal(px(a), px(b)) for a, b in zip(video.frames, again.frames, strict=True))
    listed = video.frame_images()
    assert [(g.seed, g.nsfw) for g in listed] == [(8, False)] * 4


def test_svd_conditioning_parameters_change_the_video(svd: ImageToVideoPipeline) -> None:
    base: dict[str, Any] = dict(image=gradient(), seed=8, **SVD_FAST)
    reference = px(svd.generate(ImageToVideoInput(**base)).frames[-1])
    for change in ({"fps": 12}, {"motion_bucket_id": 20}, {"noise_aug_strength": 0.5}, {"num_inference_steps": 3}):
        frames = svd.generate(ImageToVideoInput(**{**base, **change})).frames
        assert not np.array_equal(px(frames[-1]), reference), change
    assert len(svd.generate(ImageToVideoInput(**base, decode_chunk_size=1)).frames) == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"height": 60}, "multiples of 8 but are 60 and 48"),
        ({"fps": 0}, "fps must be at least 1, got 0"),
        ({"motion_bucket_id": -1}, "motion_bucket_id must be >= 0"),
        ({"noise_aug_strength": -0.1}, "noise_aug_strength must be >= 0"),
        ({"decode_chunk_size": 0}, "decode_chunk_size must be at least 1"),
        ({"height": 4096, "width": 4096}, "at most 4194304 are supported"),
    ],
)
def test_svd_invalid_requests(svd: ImageToVideoPipeline, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        svd.generate(ImageToVideoInput(**{"image": gradient(), **SVD_FAST, **changes}))


def test_video_to_mp4_with_pyav(svd: ImageToVideoPipeline) -> None:
    import av

    video = svd.generate(ImageToVideoInput(image=gradient(), seed=1, fps=8, **SVD_FAST))
    data = video.to_mp4()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (48, 32)
        assert stream.average_rate == 8
        assert len(list(container.decode(stream))) == 4


# --- upscale ----------------------------------------------------------------------------------


def test_upscale_is_4x_and_deterministic(upscaler: UpscalePipeline) -> None:
    assert upscaler.pipeline_class == "StableDiffusionUpscalePipeline" and upscaler.family.name == "upscaler"
    [big] = upscaler.upscale(UpscaleInput(prompt="sharp", image=gradient(24, 16), seed=0, num_inference_steps=2))
    assert (big.image.size, big.seed, big.nsfw) == ((96, 64), 0, False)
    [again] = upscaler.upscale(UpscaleInput(prompt="sharp", image=gradient(24, 16), seed=0, num_inference_steps=2))
    assert np.array_equal(px(big), px(again))
    [other] = upscaler.upscale(UpscaleInput(prompt="sharp", image=gradient(24, 16), seed=0, num_inference_steps=3))
    assert not np.array_equal(px(big), px(other))
    [empty] = upscaler.upscale(UpscaleInput(prompt="", image=gradient(16, 16), num_inference_steps=1))
    assert empty.image.size == (64, 64) and 0 <= empty.seed < 2**32


def test_upscale_input_limits(upscaler: UpscalePipeline) -> None:
    with pytest.raises(InvalidRequestError, match="at most 262144 are supported"):
        upscaler.upscale(UpscaleInput(prompt="x", image=Image.new("RGB", (600, 600))))
    with pytest.raises(InvalidRequestError, match="does not take loras"):
        upscaler._apply_loras('{"a/b": 1}')


# --- shared: safety checker, out of memory, fp16 choice ---------------------------------------


def test_safety_checker_flags_img2img_and_video_input(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from test_safety_checker import write_tiny_safety_checker

    shutil.copytree(tiny(tmp_path_factory, "image-to-image"), tmp_path / "sd")
    shutil.copytree(tiny(tmp_path_factory, "image-to-video"), tmp_path / "svd")
    write_tiny_safety_checker(tmp_path, flag_everything=True)
    i2i = ImageToImagePipeline("sd", model_dir=tmp_path, device="cpu")
    request: dict[str, Any] = dict(prompt="x", image=gradient(), seed=1, **I2I)
    [flagged] = i2i.generate(ImageToImageInput(**request))
    [unchecked] = i2i.generate(ImageToImageInput(**request, safety_check=False))
    assert (flagged.nsfw, unchecked.nsfw) == (True, False)
    assert np.array_equal(px(flagged), px(unchecked))  # flagged, not altered
    video = ImageToVideoPipeline("svd", model_dir=tmp_path, device="cpu")
    assert video.generate(ImageToVideoInput(image=gradient(), seed=1, **SVD_FAST)).nsfw is True
    assert video.generate(ImageToVideoInput(image=gradient(), seed=1, safety_check=False, **SVD_FAST)).nsfw is False


def test_out_of_memory_is_released_and_reported(sd_i2i: ImageToImagePipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    real = sd_i2i._pipe

    def oom(**kwargs: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(sd_i2i, "_pipe", oom)
    with pytest.raises(InferenceError, match="ran out of GPU memory"):
        sd_i2i.generate(ImageToImageInput(prompt="x", image=gradient(), seed=1, **I2I))
    assert emptied == [True]
    monkeypatch.setattr(sd_i2i, "_pipe", real)
    assert len(sd_i2i.generate(ImageToImageInput(prompt="x", image=gradient(), seed=1, **I2I))) == 1


def test_lora_on_img2img_is_applied_then_disabled(
    sd_i2i: ImageToImagePipeline, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    from test_loras import write_tiny_lora

    write_tiny_lora(tiny(tmp_path_factory, "image-to-image"), tmp_path / "lora")
    base: dict[str, Any] = dict(prompt="x", image=gradient(), seed=1, **I2I)
    [plain] = sd_i2i.generate(ImageToImageInput(**base))
    [styled] = sd_i2i.generate(ImageToImageInput(**base, loras=f'{{"{tmp_path / "lora"}": 1.0}}'))
    [after] = sd_i2i.generate(ImageToImageInput(**base))
    assert not np.array_equal(px(plain), px(styled))
    assert np.array_equal(px(plain), px(after))


# --- livestream models tiny ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "class_name"),
    [
        ("image-to-image", "StableDiffusionPipeline"),
        ("instruct-pix2pix", "StableDiffusionInstructPix2PixPipeline"),
        ("sdxl", "StableDiffusionXLPipeline"),
        ("sd3", "StableDiffusion3Pipeline"),
        ("flux", "FluxPipeline"),
        ("image-to-video", "StableVideoDiffusionPipeline"),
        ("upscale", "StableDiffusionUpscalePipeline"),
    ],
)
def test_models_tiny_cli(task: str, class_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from livestream.cli import main

    out = tmp_path / task
    assert main(["models", "tiny", "--task", task, "--out", str(out)]) == 0
    assert "not a real model" in capsys.readouterr().out
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == class_name
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 10 * 1024**2


# --- registry: switching model id unloads the old one -----------------------------------------


async def test_switching_model_id_unloads_the_idle_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    from pipelines.registry import PipelineRegistry

    root = tiny(tmp_path_factory, "image-to-image").parent
    tiny(tmp_path_factory, "instruct-pix2pix")
    loads: list[str] = []

    def factory(model_id: str, model_dir: Path | None) -> ImageToImagePipeline:
        loads.append(model_id)
        return ImageToImagePipeline(model_id, model_dir=model_dir, device="cpu")

    registry = PipelineRegistry(
        model_dir=root, default_models={}, pinned=None, max_queue=2, factories={"image-to-image": factory}
    )
    request = ImageToImageInput(prompt="x", image=gradient(), seed=1, **I2I)
    for model_id in ("tiny-image-to-image", "tiny-image-to-image", "tiny-instruct-pix2pix", "tiny-image-to-image"):
        assert len(await registry.run("image-to-image", model_id, lambda p: p.generate(request))) == 1
    # Loaded once while in use; unloaded by the switch to pix2pix, so loaded again after it.
    assert loads == ["tiny-image-to-image", "tiny-instruct-pix2pix", "tiny-image-to-image"]
    assert [key for key in registry._slots] == [("image-to-image", "tiny-image-to-image")]
    await registry.aclose()


async def test_a_busy_model_is_not_unloaded_by_a_switch() -> None:
    import asyncio
    import threading

    from pipelines.registry import PipelineRegistry

    closed: list[str] = []

    class Fake:
        def __init__(self, model_id: str) -> None:
            self.model_id = model_id

        def close(self) -> None:
            closed.append(self.model_id)

    registry = PipelineRegistry(
        model_dir=None, default_models={}, pinned=None, max_queue=2, factories={"upscale": lambda m, _: Fake(m)}
    )
    gate = threading.Event()
    busy = asyncio.create_task(registry.run("upscale", "a", lambda p: gate.wait(10)))
    while ("upscale", "a") not in registry._slots or not registry._slots[("upscale", "a")].lock.locked():
        await asyncio.sleep(0.005)
    await registry.run("upscale", "b", lambda p: p.model_id)
    assert closed == [] and ("upscale", "a") in registry._slots
    gate.set()
    assert await busy is True
    await registry.run("upscale", "c", lambda p: p.model_id)
    assert sorted(closed) == ["a", "b"]
    await registry.aclose()


# --- GPU (run with -m gpu on a machine with an NVIDIA GPU) -------------------------------------


@pytest.mark.gpu
def test_cuda_dtypes_and_out_of_memory_recovery(tmp_path_factory: pytest.TempPathFactory) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    i2i = ImageToImagePipeline(str(tiny(tmp_path_factory, "image-to-image")))
    assert (i2i.device.type, i2i.dtype) == ("cuda", torch.float16)
    assert ImageToVideoPipeline(str(tiny(tmp_path_factory, "image-to-video"))).dtype == torch.float16
    assert UpscalePipeline(str(tiny(tmp_path_factory, "upscale"))).dtype == torch.float16
    assert TextToImagePipeline(str(tiny(tmp_path_factory, "flux"))).dtype == torch.bfloat16
    request = ImageToImageInput(prompt="x", image=gradient(512, 512), seed=1, **I2I)
    [before] = i2i.generate(request)
    baseline = torch.cuda.memory_allocated()
    # Leave almost nothing free, so the next call runs out of memory for real.
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(max(0, free - 64 * 1024**2), dtype=torch.uint8, device="cuda")
    with pytest.raises(InferenceError, match="ran out of GPU memory"):
        i2i.generate(ImageToImageInput(prompt="x", image=gradient(2048, 2048), seed=1, **I2I))
    del hog
    # Nothing of the failed call is left behind, and the model still serves.
    assert torch.cuda.memory_allocated() <= baseline + 16 * 1024**2
    [after] = i2i.generate(request)
    assert np.array_equal(px(before), px(after))
