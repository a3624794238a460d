"""Text-to-image with diffusers, behaving as ai-runner's text-to-image pipeline.

Any diffusers text-to-image checkpoint `AutoPipelineForText2Image` knows (SD 1.x/2.x, SDXL,
sd-turbo/sdxl-turbo, SD3, FLUX, ...) loads from a Hugging Face id or a local folder. As in
ai-runner:

- images are generated one at a time, image `i` with seed `seed + i`; a request without a seed
  gets a random uint32 seed;
- models whose id contains `-turbo`/`_turbo` or `-lightning`/`_lightning` run with
  `guidance_scale=0`, and Lightning models with the 2/4/8 steps their id names (8 otherwise);
- `|` separates up to three prompts (and negative prompts) for models with several text
  encoders (`prompt_2`, `prompt_3`); models with one text encoder get the prompt verbatim;
- `num_inference_steps < 1` means the model's default;
- the safety checker flags images but does not alter them (see `pipelines.safety`);
- `loras` is a JSON object of LoRA repos and strengths (see `pipelines.loras`).

Not done (yet): ai-runner's special loading of `ByteDance/SDXL-Lightning` (SDXL base with the
Lightning UNet swapped in) and its forced bfloat16 for SD3/FLUX; such ids load as plain
diffusers repos or fail with `ModelLoadError`. Optimisation flags (SFAST, DEEPCACHE,
TORCH_COMPILE) are not read.
"""

from __future__ import annotations

import inspect
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError, ModelLoadError
from .loading import pick_device, resolve_model_source, torch_dtype_for
from .outputs import GeneratedImage

if TYPE_CHECKING:
    from .loras import LoraAdapters
    from .safety import SafetyChecker

__all__ = ["GeneratedImage", "TextToImageInput", "TextToImagePipeline"]

log = logging.getLogger(__name__)

_UINT32_MAX = 2**32 - 1
_TURBO = re.compile(r"[-_]turbo", re.IGNORECASE)
_LIGHTNING = re.compile(r"[-_]lightning", re.IGNORECASE)
_MAX_PROMPTS = 3


@dataclass(frozen=True)
class TextToImageInput:
    """One text-to-image request; defaults are ai-runner's."""

    prompt: str
    negative_prompt: str = ""
    height: int = 576
    width: int = 1024
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    num_images_per_prompt: int = 1
    #: None: a random uint32 seed, reported back in each `GeneratedImage`.
    seed: int | None = None
    safety_check: bool = True
    #: JSON object string `{"repo": strength}`; empty for none.
    loras: str = ""


def is_turbo_model(model_id: str) -> bool:
    return _TURBO.search(model_id) is not None


def is_lightning_model(model_id: str) -> bool:
    return _LIGHTNING.search(model_id) is not None


def _lightning_steps(model_id: str) -> int:
    for steps in (2, 4, 8):
        if f"{steps}step" in model_id.lower():
            return steps
    return 8


def _split_prompt(text: str, key: str) -> dict[str, str]:
    """`"a | b"` -> `{key: "a", f"{key}_2": "b"}`, as ai-runner's `split_prompt` (3 at most)."""
    parts = [part.strip() for part in text.split("|", _MAX_PROMPTS - 1) if part.strip()]
    if not parts:
        return {}
    result = {key: parts[0]}
    result.update({f"{key}_{i}": part for i, part in enumerate(parts[1:], start=2)})
    return result


class TextToImagePipeline:
    """A diffusers text-to-image model, loaded in `__init__` (call it in a worker thread).

    Args:
        model_id: Hugging Face id or local folder (see `pipelines.loading`).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        device: `"cuda"`, `"cpu"`, ...; default CUDA when available (float16), else CPU (float32).

    The safety checker (`CompVis/stable-diffusion-safety-checker`) is loaded alongside when it
    can be; otherwise `safety_check` has no effect, every image reports `nsfw=False`, and the
    load logs a warning saying so.

    Raises:
        ModelLoadError: the model cannot be found or loaded.
    """

    task = "text-to-image"

    def __init__(self, model_id: str, *, model_dir: Path | None = None, device: str | None = None) -> None:
        import torch
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        from .loras import LoraAdapters
        from .safety import load_safety_checker

        self.model_id = model_id
        self.device = pick_device(device)
        self.dtype = torch_dtype_for(self.device)
        source = resolve_model_source(model_id, model_dir)
        kwargs = source.from_pretrained_kwargs()
        if self.device.type == "cuda" and source.has_fp16_variant():
            kwargs["variant"] = "fp16"
        try:
            index = DiffusionPipeline.load_config(source.pretrained_name, **source.from_pretrained_kwargs())
            if "safety_checker" in index:
                # ai-runner runs its own checker (below) and returns the images unaltered.
                kwargs.update(safety_checker=None, requires_safety_checker=False)
            pipe = AutoPipelineForText2Image.from_pretrained(source.pretrained_name, dtype=self.dtype, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelLoadError(f"Could not load text-to-image model {model_id!r}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self._pipe: Any = pipe.to(self.device)
        params = inspect.signature(self._pipe.__call__).parameters
        self._call_params = frozenset(params)
        self._lora = LoraAdapters(self._pipe, model_dir)
        self._safety: SafetyChecker | None = load_safety_checker(model_dir, self.device, self.dtype)
        log.info(
            "text-to-image %s loaded (%s) on %s %s", model_id, type(self._pipe).__name__, self.device, self.dtype
        )

    @property
    def pipeline_class(self) -> str:
        """The diffusers pipeline class the model loaded as, e.g. `StableDiffusionXLPipeline`."""
        return type(self._pipe).__name__

    def generate(self, request: TextToImageInput) -> list[GeneratedImage]:
        """Generate `request.num_images_per_prompt` images, one at a time.

        Raises:
            InvalidRequestError: empty prompt, size not a positive multiple of 8, fewer than one
                image, or bad `loras`.
        """
        import torch

        kwargs = self._call_kwargs(request)
        self._lora.apply(request.loras)
        seed = random.randint(0, _UINT32_MAX) if request.seed is None else request.seed
        results: list[GeneratedImage] = []
        for i in range(request.num_images_per_prompt):
            image_seed = seed + i
            generator = torch.Generator(device=self.device).manual_seed(image_seed)
            with torch.inference_mode():
                output = self._pipe(num_images_per_prompt=1, generator=generator, output_type="pil", **kwargs)
            image = output.images[0].convert("RGB")
            nsfw = self._safety.check([image])[0] if request.safety_check and self._safety is not None else False
            results.append(GeneratedImage(image=image, seed=image_seed, nsfw=nsfw))
        return results

    def _call_kwargs(self, request: TextToImageInput) -> dict[str, Any]:
        if not request.prompt.strip():
            raise InvalidRequestError("prompt must not be empty.")
        if request.height <= 0 or request.width <= 0 or request.height % 8 or request.width % 8:
            raise InvalidRequestError(
                f"height and width have to be positive multiples of 8 but are {request.height} and {request.width}."
            )
        if request.num_images_per_prompt < 1:
            raise InvalidRequestError(
                f"num_images_per_prompt must be at least 1, got {request.num_images_per_prompt}."
            )
        kwargs: dict[str, Any] = {
            "height": request.height,
            "width": request.width,
            "guidance_scale": request.guidance_scale,
        }
        if request.num_inference_steps >= 1:
            kwargs["num_inference_steps"] = request.num_inference_steps
        if is_turbo_model(self.model_id):
            # Turbo models were distilled without classifier-free guidance.
            kwargs["guidance_scale"] = 0.0
        elif is_lightning_model(self.model_id):
            kwargs["guidance_scale"] = 0.0
            kwargs["num_inference_steps"] = _lightning_steps(self.model_id)
        kwargs.update(self._prompts(request.prompt, "prompt"))
        if "negative_prompt" in self._call_params:
            kwargs.update(self._prompts(request.negative_prompt, "negative_prompt"))
        return kwargs

    def _prompts(self, text: str, key: str) -> dict[str, str]:
        split = _split_prompt(text, key)
        if len(split) > 1 and f"{key}_2" not in self._call_params:
            return {key: text}
        return {k: v for k, v in split.items() if k in self._call_params}
