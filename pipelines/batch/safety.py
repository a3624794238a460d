"""The NSFW safety checker ai-runner runs after image generation.

ai-runner loads diffusers' `StableDiffusionSafetyChecker` from
`CompVis/stable-diffusion-safety-checker` with the CLIP image processor of
`openai/clip-vit-base-patch32`, flags images, and returns them unchanged with the flags. We do
the same when those two models can be loaded (a local folder under the model dir, the Hugging
Face cache, or a download). When they cannot, `load_safety_checker` returns `None`; pipelines
then report `nsfw=False` and say so once in the log at load time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..loading import resolve_model_source

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["SAFETY_CHECKER_ID", "SAFETY_FEATURE_EXTRACTOR_ID", "SafetyChecker", "load_safety_checker"]

log = logging.getLogger(__name__)

SAFETY_CHECKER_ID = "CompVis/stable-diffusion-safety-checker"
SAFETY_FEATURE_EXTRACTOR_ID = "openai/clip-vit-base-patch32"


class SafetyChecker:
    """Flags NSFW images. Built by `load_safety_checker`."""

    def __init__(self, checker: Any, feature_extractor: Any, device: torch.device, dtype: torch.dtype) -> None:
        self._checker = checker
        self._feature_extractor = feature_extractor
        self._device = device
        self._dtype = dtype

    def check(self, images: list[Image.Image]) -> list[bool]:
        """One flag per image; the images themselves are not modified (as in ai-runner)."""
        import numpy as np
        import torch

        clip_input = self._feature_extractor(images, return_tensors="pt").pixel_values
        arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in images]
        with torch.inference_mode():
            _, flags = self._checker(images=arrays, clip_input=clip_input.to(self._device, self._dtype))
        return [bool(flag) for flag in flags]


def load_safety_checker(model_dir: Path | None, device: torch.device, dtype: torch.dtype) -> SafetyChecker | None:
    """Load ai-runner's safety checker, or return `None` (logged once) when it is not available."""
    try:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        checker_src = resolve_model_source(SAFETY_CHECKER_ID, model_dir, probe_file="config.json")
        extractor_src = resolve_model_source(SAFETY_FEATURE_EXTRACTOR_ID, model_dir, probe_file="preprocessor_config.json")
        checker = StableDiffusionSafetyChecker.from_pretrained(
            checker_src.pretrained_name, dtype=dtype, **checker_src.from_pretrained_kwargs()
        ).to(device)
        checker.eval()
        extractor = CLIPImageProcessor.from_pretrained(
            extractor_src.pretrained_name, **extractor_src.from_pretrained_kwargs()
        )
    except (ModelLoadError, OSError, ValueError) as exc:
        log.warning(
            "safety checker %s not available (%s): images will be reported with nsfw=false", SAFETY_CHECKER_ID, exc
        )
        return None
    log.info("safety checker %s loaded on %s", SAFETY_CHECKER_ID, device)
    return SafetyChecker(checker, extractor, device, dtype)
