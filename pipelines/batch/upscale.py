"""Upscale with the Stable Diffusion x4 upscaler, behaving as ai-runner's upscale pipeline.

`StableDiffusionUpscalePipeline` (`stabilityai/stable-diffusion-x4-upscaler` or any repo of
that class): the output is 4x the input, whose sides are first rounded down to a multiple of
the VAE's scale factor. The model's own defaults apply to what the route does not expose
(guidance 9.0, noise level 20). ai-runner treats `seed=0` as "no seed"; here 0 is a seed like
any other. Inputs are limited to `MAX_UPSCALE_INPUT_PIXELS` (512x512 gives 2048x2048);
on CUDA, VAE decoding is tiled for outputs over about 1024x1024. Shared steps:
`pipelines.batch.diffusion`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..loading import ModelSource
from .diffusion import DiffusersPipeline, check_image
from .outputs import GeneratedImage

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MAX_UPSCALE_INPUT_PIXELS", "GeneratedImage", "UpscaleInput", "UpscalePipeline"]

log = logging.getLogger(__name__)

#: Largest input accepted (pixels); its output is 16 times as many.
MAX_UPSCALE_INPUT_PIXELS = 512 * 512
_FACTOR = 4


@dataclass(frozen=True)
class UpscaleInput:
    """One upscale request; defaults are ai-runner's."""

    prompt: str
    image: Image.Image
    num_inference_steps: int = 75
    #: None: a random uint32 seed, reported back in the `GeneratedImage`.
    seed: int | None = None
    safety_check: bool = True


class UpscalePipeline(DiffusersPipeline):
    """The x4 upscaler (see `DiffusersPipeline` for loading and its errors)."""

    task = "upscale"
    supports_loras = False

    def _load(self, source: ModelSource, kwargs: dict[str, Any]) -> Any:
        from diffusers import StableDiffusionUpscalePipeline

        kwargs.pop("requires_safety_checker", None)  # not a parameter of this class
        return StableDiffusionUpscalePipeline.from_pretrained(source.pretrained_name, **kwargs)

    def upscale(self, request: UpscaleInput) -> list[GeneratedImage]:
        """One image, 4x `request.image`.

        Raises:
            InvalidRequestError: an input image too small or too large.
        """
        kwargs: dict[str, Any] = self._prompt_kwargs(request.prompt, "", required=False)
        check_image(request.image, max_pixels=MAX_UPSCALE_INPUT_PIXELS)
        kwargs["image"] = request.image
        if request.num_inference_steps >= 1:
            kwargs["num_inference_steps"] = request.num_inference_steps
        width, height = request.image.size
        self._set_vae_tiling(width * height * _FACTOR * _FACTOR)
        return self._generate_images(kwargs, seed=request.seed, count=1, safety_check=request.safety_check)
