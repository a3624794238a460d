"""Processing blocks of the `streamdiffusion` pipeline (ai-runner's `image_preprocessing`,
`image_postprocessing`, `latent_preprocessing`, `latent_postprocessing`).

- **Image blocks** run on `(1, 3, H, W)` frames in [0, 1] on the worker's device: before the VAE
  encode (pre) and after the decode (post). Each enabled processor in order:
  - every ControlNet preprocessor (`preprocessors.run`: `blur`, `sharpen`, `canny`, `depth`,
    `feedback`, ...), its output being the next frame (a 1-channel map is made grey RGB);
  - `upscale`: resize by `scale_factor` (2.0, 1..4) with `algorithm` `bilinear` (default),
    `bicubic`, `nearest` or `lanczos` (run as antialiased bicubic: torch has no Lanczos);
  - `realesrgan_trt`: a learned x2 super-resolution, the `super_resolution` auxiliary model
    through transformers (`Swin2SRForImageSuperResolution`, default
    `caidas/swin2SR-lightweight-x2-64`; the reference's RealESRGAN is a TensorRT engine).
    Without the model: bicubic x2 (the size the reference computes), with a warning.
- **Latent blocks**: `latent_feedback` only: `(1 - s) latent + s previous output latent`,
  clamped to +-10 (`feedback_strength` s, 0.5), on the input latent (pre) or the output
  latent (post); the first frame passes through.
- `output_resolution` is the reference's `get_output_resolution`.
- `skip_diffusion`: only the image blocks run (pre, then post).

A size change from an upscaler is applied mid-stream too: the output frames change size and
the encoder re-opens at the new size with a keyframe, as for a `width`/`height` change (the
reference refuses it after the stream's start).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..loading import resolve_model_source

if TYPE_CHECKING:
    import torch

    from .streamdiffusion_params import StreamDiffusionParams

__all__ = ["LatentFeedback", "enabled_processors", "latent_block", "image_block", "load_super_resolution", "output_resolution"]

log = logging.getLogger(__name__)

_ALGORITHMS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "lanczos": "bicubic"}


def enabled_processors(block: Any) -> list[Any]:
    """The enabled processors of a block (None or a disabled block: none)."""
    if block is None or not block.enabled:
        return []
    return [p for p in block.processors if p.enabled]


def _scale(p: Any) -> float:
    return min(4.0, max(1.0, float(p.params.get("scale_factor", 2.0))))


def output_resolution(params: StreamDiffusionParams, width: int, height: int) -> tuple[int, int]:
    """ai-runner's `get_output_resolution`: x2 per enabled `realesrgan_trt`, x`scale_factor` per
    enabled `upscale` in `image_postprocessing` (truncated to int)."""
    factor = 1.0
    for p in enabled_processors(params.image_postprocessing):
        if p.type == "realesrgan_trt":
            factor *= 2.0
        elif p.type == "upscale":
            factor *= _scale(p)
    return int(width * factor), int(height * factor)


def image_block(
    processors: Sequence[Any],
    image: torch.Tensor,
    memory: dict[str, Any],
    models: Mapping[str, Any] | None = None,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run `processors` on `image` (`(1, 3, H, W)` in [0, 1]); `memory` keeps what each keeps
    between frames (by position and name); `previous` is the stream's previous output in
    [0, 1] (`feedback`)."""
    import torch.nn.functional as F

    from .preprocessors import run as run_preprocessor

    for i, p in enumerate(processors):
        if p.type == "upscale":
            size = (int(image.shape[-2] * _scale(p)), int(image.shape[-1] * _scale(p)))
            mode = _ALGORITHMS.get(str(p.params.get("algorithm", "bilinear")), "bilinear")
            kwargs: dict[str, Any] = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            image = F.interpolate(image, size=size, mode=mode, **kwargs).clamp(0, 1)
        elif p.type == "realesrgan_trt":
            model = (models or {}).get("super_resolution")
            image = _super_resolve(model, image) if model is not None else F.interpolate(
                image, scale_factor=2.0, mode="bicubic", align_corners=False
            ).clamp(0, 1)
        else:
            mem = memory.setdefault(f"{i}:{p.type}", {})
            if p.type == "feedback":
                fits = previous is not None and previous.shape[-2:] == image.shape[-2:]
                mem["previous_output"] = previous.to(image.dtype) if fits and previous is not None else None
            out = run_preprocessor(p.type, image, dict(p.params), mem, models)
            image = out if out.shape[1] == 3 else out[:, :1].expand(-1, 3, -1, -1)
    return image


class LatentFeedback:
    """A stream's latent blocks (`StreamState.latent_blocks`): `pre` on the input latent, `post`
    on the output latent; both blend with the previous output latent."""

    def __init__(self, pre: Sequence[Any], post: Sequence[Any]) -> None:
        self.pre_processors, self.post_processors = list(pre), list(post)
        self.memory: dict[str, Any] = {}

    def configure(self, pre: Sequence[Any], post: Sequence[Any]) -> None:
        self.pre_processors, self.post_processors = list(pre), list(post)

    def pre(self, latent: torch.Tensor) -> torch.Tensor:
        return latent_block(self.pre_processors, latent, self.memory)

    def post(self, latent: torch.Tensor) -> torch.Tensor:
        out = latent_block(self.post_processors, latent, self.memory)
        self.memory["previous"] = out.detach()
        return out


def latent_block(processors: Sequence[Any], latent: torch.Tensor, memory: dict[str, Any]) -> torch.Tensor:
    """`latent_feedback` processors on a `(1, C, h, w)` latent; `memory["previous"]` is the
    stream's previous output latent (set by the caller)."""
    previous = memory.get("previous")
    for p in processors:
        if p.type != "latent_feedback" or previous is None or previous.shape != latent.shape:
            continue
        s = min(1.0, max(0.0, float(p.params.get("feedback_strength", 0.5))))
        latent = ((1 - s) * latent + s * previous.to(latent.dtype)).clamp(-10, 10)
    return latent


def _super_resolve(model: Any, image: torch.Tensor) -> torch.Tensor:
    import torch

    with torch.inference_mode():
        out = model(pixel_values=image.to(next(model.parameters()).dtype)).reconstruction
    h, w = image.shape[-2] * 2, image.shape[-1] * 2
    return out[..., :h, :w].clamp(0, 1).to(image.dtype)


def load_super_resolution(model_id: str, *, model_dir: Path | None, device: torch.device, dtype: torch.dtype) -> Any:
    """A transformers `Swin2SRForImageSuperResolution` (x2) from an id or folder; raises `ModelLoadError`."""
    from transformers import Swin2SRForImageSuperResolution

    try:
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        model = Swin2SRForImageSuperResolution.from_pretrained(source.pretrained_name, dtype=dtype, **source.from_pretrained_kwargs())
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load the super-resolution model {model_id!r}: {exc}") from exc
    if int(model.config.upscale) != 2:
        raise ModelLoadError(f"{model_id!r} upscales x{model.config.upscale}; realesrgan_trt is x2")
    return model.to(device).eval().requires_grad_(False)
