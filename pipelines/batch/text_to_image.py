"""Text-to-image with diffusers, behaving as ai-runner's text-to-image pipeline.

Any diffusers text-to-image checkpoint `AutoPipelineForText2Image` knows (SD 1.x/2.x, SDXL,
sd-turbo/sdxl-turbo, SD3, FLUX, ...) loads from a Hugging Face id or a local folder; the
shared steps (loading, dtype, seeds, safety checker, LoRAs) are `pipelines.batch.diffusion`'s. As in
ai-runner:

- images are generated one at a time, image `i` with seed `seed + i`; a request without a seed
  gets a random uint32 seed;
- models whose id contains `-turbo`/`_turbo` or `-lightning`/`_lightning` run with
  `guidance_scale=0`, and Lightning models with the 2/4/8 steps their id names (8 otherwise);
- `ByteDance/SDXL-Lightning` (a repo of UNet weights only) loads as SDXL base with the
  Lightning UNet swapped in and Euler "trailing" timesteps (see `pipelines.batch.lightning`);
- FLUX models get no negative prompt; SD3/FLUX run in bfloat16 on CUDA;
- `|` separates up to three prompts (and negative prompts) for models with several text
  encoders (`prompt_2`, `prompt_3`); models with one text encoder get the prompt verbatim;
- `num_inference_steps < 1` means the model's default;
- the safety checker flags images but does not alter them (see `pipelines.batch.safety`);
- `loras` is a JSON object of LoRA repos and strengths (see `pipelines.batch.loras`).

Not read: ai-runner's optimisation flags (SFAST, DEEPCACHE, TORCH_COMPILE, BFLOAT16).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from ..loading import ModelSource, is_turbo_model
from .diffusion import LightningAwarePipeline, check_size, split_prompt
from .lightning import is_bytedance_lightning, is_lightning_model, lightning_steps, load_sdxl_lightning
from .outputs import GeneratedImage

__all__ = ["GeneratedImage", "TextToImageInput", "TextToImagePipeline", "is_lightning_model", "is_turbo_model"]

log = logging.getLogger(__name__)

# Kept under its old name for callers and tests.
_split_prompt = split_prompt


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


class TextToImagePipeline(LightningAwarePipeline):
    """A diffusers text-to-image model (see `DiffusersPipeline` for loading and its errors)."""

    task = "text-to-image"

    def _load(self, source: ModelSource, kwargs: dict[str, Any]) -> Any:
        from diffusers import AutoPipelineForText2Image

        if is_bytedance_lightning(self.model_id):
            return load_sdxl_lightning(self.model_id, source, kwargs, self.device, self.model_dir)
        return AutoPipelineForText2Image.from_pretrained(source.pretrained_name, **kwargs)

    def generate(self, request: TextToImageInput) -> list[GeneratedImage]:
        """Generate `request.num_images_per_prompt` images, one at a time.

        Raises:
            InvalidRequestError: empty prompt, size not a positive multiple of 8 (or too
                large), fewer than one image, or bad `loras`.
        """
        kwargs = self._call_kwargs(request)
        self._apply_loras(request.loras)
        self._set_vae_tiling(request.height * request.width)
        return self._generate_images(
            kwargs, seed=request.seed, count=request.num_images_per_prompt, safety_check=request.safety_check
        )

    def _call_kwargs(self, request: TextToImageInput) -> dict[str, Any]:
        check_size(request.height, request.width)
        kwargs: dict[str, Any] = self._prompt_kwargs(request.prompt, request.negative_prompt)
        if request.num_images_per_prompt < 1:
            raise InvalidRequestError(
                f"num_images_per_prompt must be at least 1, got {request.num_images_per_prompt}."
            )
        kwargs.update(height=request.height, width=request.width, guidance_scale=request.guidance_scale)
        if request.num_inference_steps >= 1:
            kwargs["num_inference_steps"] = request.num_inference_steps
        if self.family.turbo:
            # Turbo models were distilled without classifier-free guidance.
            kwargs["guidance_scale"] = 0.0
        elif self.family.lightning:
            kwargs["guidance_scale"] = 0.0
            kwargs["num_inference_steps"] = lightning_steps(self.model_id)
        return kwargs
