"""`ByteDance/SDXL-Lightning`: SDXL base with a distilled UNet swapped in, as ai-runner loads it.

The Lightning repo holds UNet weights only (`sdxl_lightning_{2,4,8}step_unet.safetensors`), so
ids such as `ByteDance/SDXL-Lightning-4step` load `stabilityai/stable-diffusion-xl-base-1.0`,
replace its UNet with the one for the step count the id names (8 when it names none), and
switch the scheduler to Euler with "trailing" timesteps, which the distillation assumes.
Both repos resolve like any model: a folder under the model dir or the Hugging Face cache.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..loading import ModelSource, resolve_model_source

if TYPE_CHECKING:
    import torch

__all__ = [
    "SDXL_BASE_ID",
    "SDXL_LIGHTNING_ID",
    "is_bytedance_lightning",
    "is_lightning_model",
    "lightning_steps",
    "load_sdxl_lightning",
    "resolve_lightning_source",
]

log = logging.getLogger(__name__)

SDXL_LIGHTNING_ID = "ByteDance/SDXL-Lightning"
SDXL_BASE_ID = "stabilityai/stable-diffusion-xl-base-1.0"

_LIGHTNING = re.compile(r"[-_]lightning", re.IGNORECASE)


def is_lightning_model(model_id: str) -> bool:
    """SDXL-Lightning style ids: no guidance and a fixed step count."""
    return _LIGHTNING.search(model_id) is not None


def lightning_steps(model_id: str) -> int:
    """The 2/4/8 steps a Lightning id names (`...-4step`), 8 when it names none (ai-runner)."""
    for steps in (2, 4, 8):
        if f"{steps}step" in model_id.lower():
            return steps
    return 8


def is_bytedance_lightning(model_id: str) -> bool:
    return SDXL_LIGHTNING_ID.lower() in model_id.lower()


def unet_file(model_id: str) -> str:
    return f"sdxl_lightning_{lightning_steps(model_id)}step_unet.safetensors"


def resolve_lightning_source(model_id: str, model_dir: Path | None) -> ModelSource:
    """The SDXL base the Lightning UNet goes into."""
    return resolve_model_source(SDXL_BASE_ID, model_dir)


def load_sdxl_lightning(
    model_id: str, base: ModelSource, kwargs: dict[str, Any], device: torch.device, model_dir: Path | None
) -> Any:
    """SDXL base from `base` with the Lightning UNet of `model_id`; `kwargs` go to `from_pretrained`."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    filename = unet_file(model_id)
    weights = resolve_model_source(SDXL_LIGHTNING_ID, model_dir, probe_file=filename)
    if weights.path is not None:
        path = str(weights.path / filename)
    else:
        path = hf_hub_download(SDXL_LIGHTNING_ID, filename, **weights.from_pretrained_kwargs())
    config = UNet2DConditionModel.load_config(base.pretrained_name, subfolder="unet", **base.from_pretrained_kwargs())
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(load_file(path))
    unet.to(device, kwargs["dtype"])
    pipe = StableDiffusionXLPipeline.from_pretrained(base.pretrained_name, unet=unet, **kwargs)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    log.info("SDXL-Lightning: %s with %s", base.pretrained_name, filename)
    return pipe
