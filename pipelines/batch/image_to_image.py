"""Image-to-image with diffusers, behaving as ai-runner's image-to-image pipeline.

Families (told apart by `pipelines.batch.diffusion.detect_family`):

- SD 1.x/2.x, SDXL, SD3, FLUX, sd-turbo/sdxl-turbo: `AutoPipelineForImage2Image`; `strength`
  sets how much of the input is noised away, so `int(num_inference_steps * strength)` steps
  run (at least one is required; Turbo models get `strength` raised to `1/steps` as in
  ai-runner, so a 1-step request still runs);
- instruct-pix2pix (`timbrooks/instruct-pix2pix` or any `StableDiffusionInstructPix2PixPipeline`
  repo): edits the image as the prompt instructs, weighing the input image by
  `image_guidance_scale`; Euler ancestral scheduler as in ai-runner; `strength` does not apply;
- Lightning (`ByteDance/SDXL-Lightning-{2,4,8}step` or a `-lightning` id): guidance 0, the
  steps the id names.

The output has the input's size rounded down to a multiple of the VAE's scale factor (8 for
SD/SDXL; 16 for SD3/FLUX); images are
generated one at a time with seeds `seed + i`. Shared steps: `pipelines.batch.diffusion`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError
from ..loading import ModelSource
from .diffusion import LightningAwarePipeline, check_image
from .lightning import is_bytedance_lightning, lightning_steps, load_sdxl_lightning
from .outputs import GeneratedImage

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GeneratedImage", "ImageToImageInput", "ImageToImagePipeline"]

log = logging.getLogger(__name__)

#: Steps diffusers' img2img pipelines use when a request asks for `num_inference_steps < 1`.
_DEFAULT_STEPS = 50
#: SD3/FLUX output sides are multiples of this.
_SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class ImageToImageInput:
    """One image-to-image request; defaults are ai-runner's."""

    prompt: str
    image: Image.Image
    negative_prompt: str = ""
    strength: float = 0.8
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5
    num_inference_steps: int = 100
    num_images_per_prompt: int = 1
    #: None: a random uint32 seed, reported back in each `GeneratedImage`.
    seed: int | None = None
    safety_check: bool = True
    #: JSON object string `{"repo": strength}`; empty for none.
    loras: str = ""


class ImageToImagePipeline(LightningAwarePipeline):
    """A diffusers image-to-image model (see `DiffusersPipeline` for loading and its errors)."""

    task = "image-to-image"

    def _load(self, source: ModelSource, kwargs: dict[str, Any]) -> Any:
        from diffusers import AutoPipelineForImage2Image

        if is_bytedance_lightning(self.model_id):
            base = load_sdxl_lightning(self.model_id, source, kwargs, self.device, self.model_dir)
            return AutoPipelineForImage2Image.from_pipe(base)
        if self.family.name == "pix2pix":
            from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(source.pretrained_name, **kwargs)
            pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
            return pipe
        return AutoPipelineForImage2Image.from_pretrained(source.pretrained_name, **kwargs)

    def generate(self, request: ImageToImageInput) -> list[GeneratedImage]:
        """Transform `request.image` into `request.num_images_per_prompt` images, one at a time.

        Raises:
            InvalidRequestError: strength outside [0, 1] or leaving no step to
                run, an input image too small or too large, fewer than one image, or bad `loras`.
        """
        kwargs = self._call_kwargs(request)
        self._apply_loras(request.loras)
        width, height = request.image.size
        self._set_vae_tiling(width * height)
        return self._generate_images(
            kwargs, seed=request.seed, count=request.num_images_per_prompt, safety_check=request.safety_check
        )

    def _call_kwargs(self, request: ImageToImageInput) -> dict[str, Any]:
        kwargs: dict[str, Any] = self._prompt_kwargs(request.prompt, request.negative_prompt, required=False)
        check_image(request.image)
        if request.num_images_per_prompt < 1:
            raise InvalidRequestError(f"num_images_per_prompt must be at least 1, got {request.num_images_per_prompt}.")
        kwargs.update(image=request.image, guidance_scale=request.guidance_scale)
        steps = request.num_inference_steps if request.num_inference_steps >= 1 else None
        if steps is not None:
            kwargs["num_inference_steps"] = steps
        if self.family.lightning:
            kwargs["guidance_scale"] = 0.0
            steps = kwargs["num_inference_steps"] = lightning_steps(self.model_id)
        elif self.family.turbo:
            kwargs["guidance_scale"] = 0.0
        if self._accepts("height") and self._accepts("width"):
            # SD3/FLUX img2img default to their native size, not the input's: keep the input's,
            # rounded down to the 16 px their latents (VAE 8 x patch 2) need.
            width, height = request.image.size
            kwargs.update(width=max(_SIZE_MULTIPLE, width - width % _SIZE_MULTIPLE))
            kwargs.update(height=max(_SIZE_MULTIPLE, height - height % _SIZE_MULTIPLE))
        if self._accepts("image_guidance_scale"):
            kwargs["image_guidance_scale"] = request.image_guidance_scale
        if self._accepts("strength"):
            kwargs["strength"] = self._strength(request.strength, steps)
        return kwargs

    def _strength(self, strength: float, steps: int | None) -> float:
        if not 0.0 <= strength <= 1.0:
            raise InvalidRequestError(f"strength must be between 0 and 1, got {strength}.")
        total = steps if steps is not None else _DEFAULT_STEPS
        if self.family.turbo:
            # As ai-runner: at least one denoising step whatever the strength.
            return max(1.0 / total, strength)
        if int(total * strength) < 1:
            raise InvalidRequestError(
                f"strength {strength} with num_inference_steps {total} leaves no denoising step to run "
                f"(int(steps x strength) = {int(total * strength)}); raise either."
            )
        return strength
