"""ControlNet preprocessors: the control image of a ControlNet, computed from the input frame.

One contract: `run(name, image, params, memory) -> control`, where `image` is the frame as
`(1, 3, H, W)` in [0, 1] on the worker's device, `params` the entry's `preprocessor_params`
and `memory` a small per-(session, ControlNet) dict the preprocessor may keep frames in
(`feedback`'s previous output, `temporal_net`'s previous input). The result is
`(1, C, H, W)` in [0, 1] on the same device. Everything here is plain torch, so it runs on the
GPU worker beside the UNet with no host round trip.

Served (`SERVED`):

- `passthrough`, `external` (the frame as it is; `external` has no client-supplied image here);
- `canny`: Canny edges, `low_threshold`/`high_threshold` on the 0..255 scale as OpenCV's
  (Sobel 3x3 gradients, L2 magnitude, non-maximum suppression along the quantised
  direction, hysteresis by repeated 3x3 dilation through weak edges);
- `blur`: Gaussian, `blur_intensity` (sigma, 0.1..10) and `kernel_size` (3..51, odd);
- `sharpen`: unsharp mask, `sharpen_intensity` and `unsharp_radius`;
- `soft_edge`: multi-scale Sobel magnitude (1, 1/2, 1/4), normalised: HED-like soft edges;
- `standard_lineart`: Gaussian-blurred intensity difference, `gaussian_sigma`,
  `intensity_threshold`;
- `feedback`: `(1 - s) * frame + s * previous output`, `feedback_strength` s (0..1, 0.5);
  the first frame passes through. The previous output is handed in by the pipeline.
- `depth`, `depth_tensorrt`: a transformers depth model (the `depth` auxiliary model, default
  Depth Anything V2 Small; `AutoModelForDepthEstimation`, so DPT too) at `detect_resolution`
  (518, rounded to the patch size), ImageNet-normalised; its relative depth (larger = nearer)
  resized to the frame and min-max normalised, grey in 3 channels. Needs `models["depth"]`;
  without it, passthrough.
- `openpose`, `pose_tensorrt`: the `pose` auxiliary model (transformers ViTPose) on the person
  boxes of the `person_detector` auxiliary model (RT-DETR; the whole frame when it finds no one
  or did not load), drawn as an OpenPose skeleton (`preprocessor_pose`, `preprocessor_person`);
  `confidence_threshold` (0.3) drops keypoints scored below it, `person_threshold` (0.5) boxes.
  Without the pose model, passthrough.
- `lineart`: the informative-drawings line-art generator (the `lineart` auxiliary model:
  `sk_model.pth`/`sk_model2.pth` of `lllyasviel/Annotators`, `preprocessor_lineart`), `coarse`
  (true) and `detect_resolution` (512); `anime_style` is not served (its model is another
  network) and runs the same generator. Without the model: `standard_lineart` (`FALLBACK`).

Depth and pose (any frame sizes) and HED and line art (per frame size) run batched across the
streams of a worker tick (`preprocessor_batch`): one model call for every stream that uses the
same model with the same settings.

Model-backed preprocessors (`MODEL_BACKED`: name -> auxiliary kind) get their model from
`models[kind]`; `load_model(kind, ...)` loads one (on the session's thread); `model_kinds(name)`
lists every kind a name uses (pose: its detector too).

- `temporal_net_tensorrt`: `[previous input, optical-flow image]`, 6 channels, as TemporalNet2
  expects (OpenCV's DIS flow drawn as the Middlebury colour wheel; `preprocessor_flow`);
  `output_format` `concat` (6) or `warped_only` (the flow image), `flow_strength`,
  `width`/`height` (the flow's size; default the frame's). The previous input is kept in
  `memory`.

- `hed`: the HED network (the `hed` auxiliary model: `ControlNetHED.pth` of
  `lllyasviel/Annotators`, loaded into `preprocessor_hed.HEDNetwork`), controlnet_aux's soft
  edges, `safe` (true) quantised. Without the model, passthrough.

Not served (`UNSERVED`, with why): MediaPipe, `upscale` and `realesrgan_trt`
(change the size: not a control image). They run as `passthrough` and the pipeline reports the reason as a warning.
"""

from __future__ import annotations

import math
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..loading import resolve_model_source

if TYPE_CHECKING:
    import torch

__all__ = [
    "FALLBACK",
    "MODEL_BACKED",
    "SERVED",
    "UNSERVED",
    "depth",
    "depth_batch",
    "fit_channels",
    "load_model",
    "model_kinds",
    "run",
    "served",
]

log = logging.getLogger(__name__)

SERVED = (
    "passthrough",
    "external",
    "canny",
    "blur",
    "sharpen",
    "soft_edge",
    "standard_lineart",
    "feedback",
    "temporal_net_tensorrt",
)
#: Preprocessors that need an auxiliary model (`aux_models` kind), served when it loaded.
MODEL_BACKED: dict[str, str] = {
    "depth": "depth",
    "depth_tensorrt": "depth",
    "openpose": "pose",
    "pose_tensorrt": "pose",
    "hed": "hed",
    "lineart": "lineart",
}
#: Auxiliary kinds a model-backed preprocessor also uses when they loaded (its own still optional).
OPTIONAL_KINDS: dict[str, tuple[str, ...]] = {"pose": ("person_detector",)}
#: What a model-backed preprocessor runs when its model is missing (default: passthrough).
FALLBACK: dict[str, str] = {"lineart": "standard_lineart"}

UNSERVED: dict[str, str] = {
    "mediapipe_pose": "mediapipe is not installed (its OpenCV build does not import beside our torch)",
    "mediapipe_segmentation": "mediapipe is not installed (its OpenCV build does not import beside our torch)",
    "upscale": "an upscaler changes the image size: not a control image",
    "realesrgan_trt": "an upscaler changes the image size: not a control image",
}


def served(name: str) -> bool:
    return name in SERVED


def model_kinds(name: str) -> tuple[str, ...]:
    """The auxiliary model kinds preprocessor `name` uses (empty for a plain-torch one)."""
    kind = MODEL_BACKED.get(name)
    return () if kind is None else (kind, *OPTIONAL_KINDS.get(kind, ()))


def run(
    name: str, image: torch.Tensor, params: dict[str, Any], memory: dict[str, Any], models: Mapping[str, Any] | None = None
) -> torch.Tensor:
    """The control image of preprocessor `name` (see the module docstring); an unserved name,
    or a model-backed one without its model in `models`, returns the frame (passthrough)."""
    kind = MODEL_BACKED.get(name)
    if kind is not None:
        model = (models or {}).get(kind)
        if model is None:
            fallback = FALLBACK.get(name)
            return image if fallback is None else run(fallback, image, params, memory, models)
        if kind == "lineart":
            from .preprocessor_lineart import lineart

            return lineart(image, model, bool(params.get("coarse", True)), int(params.get("detect_resolution", 512)))
        if kind == "hed":
            from .preprocessor_hed import hed

            return hed(image, model, bool(params.get("safe", True)))
        if kind == "pose":
            from .preprocessor_pose import pose

            return pose(
                image,
                model,
                _clamp(params.get("confidence_threshold", 0.3), 0.0, 1.0),
                (models or {}).get("person_detector"),
                _clamp(params.get("person_threshold", 0.5), 0.0, 1.0),
            )
        return depth(image, model, int(params.get("detect_resolution", 518)))
    if name == "canny":
        return canny(image, float(params.get("low_threshold", 100)), float(params.get("high_threshold", 200)))
    if name == "blur":
        return gaussian_blur(image, _clamp(params.get("blur_intensity", 2.0), 0.1, 10.0), int(params.get("kernel_size", 15)))
    if name == "sharpen":
        return sharpen(image, float(params.get("sharpen_intensity", 1.5)), float(params.get("unsharp_radius", 1.0)))
    if name == "soft_edge":
        return soft_edge(image)
    if name == "standard_lineart":
        return standard_lineart(
            image, _clamp(params.get("gaussian_sigma", 6.0), 1.0, 20.0), _clamp(params.get("intensity_threshold", 8), 1.0, 50.0)
        )
    if name == "temporal_net_tensorrt":
        from .preprocessor_flow import temporal_net

        return temporal_net(image, params, memory)
    if name == "feedback":
        previous = memory.get("previous_output")
        if previous is None or previous.shape != image.shape:
            return image
        s = _clamp(params.get("feedback_strength", 0.5), 0.0, 1.0)
        return (1 - s) * image + s * previous.to(image.dtype)
    return image


def fit_channels(control: torch.Tensor, channels: int) -> torch.Tensor:
    """`control` with `channels` channels: grey from RGB for 1, the first ones when there are
    more, repeated when there are fewer (a 3-channel map for a 6-channel ControlNet)."""
    import torch

    c = int(control.shape[1])
    if c == channels:
        return control
    if channels == 1:
        return control.mean(dim=1, keepdim=True)
    if c > channels:
        return control[:, :channels]
    reps = math.ceil(channels / c)
    return torch.cat([control] * reps, dim=1)[:, :channels]


def _clamp(value: Any, low: float, high: float) -> float:
    return min(high, max(low, float(value)))


def _grey(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _gauss_kernel(sigma: float, size: int, like: torch.Tensor) -> torch.Tensor:
    import torch

    x = torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).to(like.dtype)


def gaussian_blur(image: torch.Tensor, sigma: float, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur, reflect padding; `kernel_size` forced odd in 3..51."""
    import torch.nn.functional as F

    size = max(3, min(51, kernel_size))
    size += 1 - size % 2
    k = _gauss_kernel(sigma, size, image)
    c = image.shape[1]
    pad = size // 2
    x = F.pad(image, (pad, pad, 0, 0), mode="reflect") if image.shape[-1] > pad else F.pad(image, (pad, pad, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    x = F.pad(x, (0, 0, pad, pad), mode="reflect") if image.shape[-2] > pad else F.pad(x, (0, 0, pad, pad), mode="replicate")
    return F.conv2d(x, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


def _sobel(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    import torch.nn.functional as F

    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=grey.device, dtype=grey.dtype)
    x = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(x, kx.view(1, 1, 3, 3))
    gy = F.conv2d(x, kx.t().contiguous().view(1, 1, 3, 3))
    return gx, gy


def canny(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges as white on black, 3 channels (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    grey = _grey(image.float()) * 255.0
    gx, gy = _sobel(grey)
    mag = torch.sqrt(gx * gx + gy * gy)
    # Direction quantised to 0, 45, 90, 135 degrees; compare with the two neighbours along it.
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    padded = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]

    def shifted(dy: int, dx: int) -> torch.Tensor:
        return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    horizontal = (angle < 22.5) | (angle >= 157.5)
    diag45 = (angle >= 22.5) & (angle < 67.5)
    vertical = (angle >= 67.5) & (angle < 112.5)
    n1 = torch.where(horizontal, shifted(0, -1), torch.where(diag45, shifted(-1, -1), torch.where(vertical, shifted(-1, 0), shifted(-1, 1))))
    n2 = torch.where(horizontal, shifted(0, 1), torch.where(diag45, shifted(1, 1), torch.where(vertical, shifted(1, 0), shifted(1, -1))))
    peak = (mag >= n1) & (mag >= n2) & (mag > 0)
    low, high = min(low, high), max(low, high)
    strong = peak & (mag >= high)
    weak = peak & (mag >= low)
    edges = strong.float()
    # Hysteresis: weak pixels joined to strong ones (a bounded number of dilations).
    for _ in range(max(8, (h + w) // 16)):
        edges = F.max_pool2d(edges, 3, stride=1, padding=1) * weak.float()
    return edges.to(image.dtype).expand(-1, 3, -1, -1).contiguous()


def sharpen(image: torch.Tensor, intensity: float, radius: float) -> torch.Tensor:
    sigma = max(0.3, radius)
    blurred = gaussian_blur(image, sigma, int(2 * math.ceil(3 * sigma) + 1))
    return (image + intensity * (image - blurred)).clamp(0, 1)


def soft_edge(image: torch.Tensor) -> torch.Tensor:
    """Multi-scale Sobel magnitude, normalised to [0, 1] per image; 3 channels."""
    import torch.nn.functional as F

    grey = _grey(image.float())
    h, w = grey.shape[-2:]
    total = None
    for factor in (1, 2, 4):
        g = grey if factor == 1 else F.avg_pool2d(grey, factor, ceil_mode=True)
        gx, gy = _sobel(g)
        mag = (gx * gx + gy * gy).sqrt()
        if factor != 1:
            mag = F.interpolate(mag, size=(h, w), mode="bilinear", align_corners=False)
        total = mag if total is None else total + mag / factor
    assert total is not None
    peak = total.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return (total / peak).to(image.dtype).expand(-1, 3, -1, -1).contiguous()


def standard_lineart(image: torch.Tensor, sigma: float, threshold: float) -> torch.Tensor:
    """Dark lines where the frame is darker than its blur by more than `threshold` (0..255)."""
    grey = _grey(image.float()) * 255.0
    blurred = gaussian_blur(grey, sigma, int(2 * math.ceil(3 * sigma) + 1))
    lines = (blurred - grey - threshold).clamp_min(0)
    peak = lines.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return (lines / peak).to(image.dtype).expand(-1, 3, -1, -1).contiguous()


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def depth(image: torch.Tensor, model: Any, resolution: int) -> torch.Tensor:
    """Relative depth of `image` from a transformers depth-estimation model, as a grey control
    image in [0, 1] (nearer is brighter); see the module docstring."""
    (out,) = depth_batch([image], model, resolution)
    return out


def depth_batch(images: Sequence[torch.Tensor], model: Any, resolution: int) -> list[torch.Tensor]:
    """`depth` of each frame (any sizes), all in one model call: each is resized to the model's
    square input first, so they stack."""
    import torch
    import torch.nn.functional as F

    patch = int(getattr(model.config, "patch_size", 14) or 14)
    size = max(patch, round(resolution / patch) * patch)
    x = torch.cat([F.interpolate(image.float(), size=(size, size), mode="bilinear", align_corners=False) for image in images])
    mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    param = next(model.parameters())
    out = model(pixel_values=((x - mean) / std).to(param.dtype)).predicted_depth.float()
    result = []
    for i, image in enumerate(images):
        d = F.interpolate(out[i : i + 1].unsqueeze(1), size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
        low = d.amin(dim=(-2, -1), keepdim=True)
        span = (d.amax(dim=(-2, -1), keepdim=True) - low).clamp_min(1e-6)
        result.append(((d - low) / span).to(image.dtype).expand(-1, 3, -1, -1).contiguous())
    return result


def load_model(kind: str, model_id: str, *, model_dir: Path | None, device: torch.device, dtype: torch.dtype) -> Any:
    """The auxiliary model of `kind` (`MODEL_BACKED`'s values) from a Hugging Face id or a
    local folder, on `device`, in eval mode; raises ModelLoadError."""
    try:
        if kind == "hed":
            from .preprocessor_hed import CHECKPOINT, load_hed_model

            if Path(model_id).expanduser().is_file():
                return load_hed_model(Path(model_id).expanduser(), device=device, dtype=dtype)
            source = resolve_model_source(model_id, model_dir, probe_file=CHECKPOINT)
            if source.path is not None:
                return load_hed_model(source.path / CHECKPOINT, device=device, dtype=dtype)
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(source.model_id, CHECKPOINT, **source.from_pretrained_kwargs())
            return load_hed_model(Path(file), device=device, dtype=dtype)
        if kind == "lineart":
            return _load_lineart(model_id, model_dir=model_dir, device=device, dtype=dtype)
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        if kind == "pose":
            from .preprocessor_pose import load_pose_model

            return load_pose_model(source.pretrained_name, source.from_pretrained_kwargs(), device=device, dtype=dtype)
        if kind == "person_detector":
            from .preprocessor_person import load_person_detector

            return load_person_detector(source.pretrained_name, source.from_pretrained_kwargs(), device=device, dtype=dtype)
        if kind == "depth":
            from transformers import AutoModelForDepthEstimation

            model = AutoModelForDepthEstimation.from_pretrained(source.pretrained_name, dtype=dtype, **source.from_pretrained_kwargs())
            return model.to(device).eval().requires_grad_(False)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(str(exc)) from exc
    raise ModelLoadError(f"no preprocessor model of kind {kind!r}")


def _load_lineart(model_id: str, *, model_dir: Path | None, device: torch.device, dtype: torch.dtype) -> Any:
    """The line-art generators from a checkpoint file, a folder or a Hub repo holding
    `sk_model.pth` (and optionally `sk_model2.pth`, the coarse one)."""
    from .preprocessor_lineart import CHECKPOINT, COARSE_CHECKPOINT, load_lineart_model

    given = Path(model_id).expanduser()
    if given.is_file():
        return load_lineart_model(given, given.with_name(COARSE_CHECKPOINT), device=device, dtype=dtype)
    source = resolve_model_source(model_id, model_dir, probe_file=CHECKPOINT)
    if source.path is not None:
        return load_lineart_model(source.path / CHECKPOINT, source.path / COARSE_CHECKPOINT, device=device, dtype=dtype)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    fine = Path(hf_hub_download(source.model_id, CHECKPOINT, **source.from_pretrained_kwargs()))
    try:
        coarse: Path | None = Path(hf_hub_download(source.model_id, COARSE_CHECKPOINT, **source.from_pretrained_kwargs()))
    except EntryNotFoundError as exc:
        log.warning("line-art model %s: no %s (%s): coarse runs the fine generator", model_id, COARSE_CHECKPOINT, exc)
        coarse = None
    return load_lineart_model(fine, coarse, device=device, dtype=dtype)
