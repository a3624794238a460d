"""Segment Anything 2 through transformers' `Sam2Model`, answering as ai-runner's SAM2 route does.

ai-runner runs `SAM2ImagePredictor.predict` from Meta's `sam2` package; that package (and
transformers' `Sam2Processor`) needs torchvision, which this engine does not install. The pre-
and post-processing are therefore done here, as the predictor does them:

- the image is resized to the model's square input (1024 px for the released models) and
  normalised with the ImageNet mean/std (or the model's `preprocessor_config.json`);
- `point_coords` (Nx2, x/y) and `box` (x1, y1, x2, y2) are in pixels of the uploaded image when
  `normalize_coords` is true (the default), else already normalised to [0, 1];
  `point_labels` holds one label per point (1 foreground, 0 background);
- `mask_input` is a low-resolution logits mask (1xHxW, 256x256 for SAM 2, e.g. a previous
  answer's `logits` entry), resized to the model's mask input when needed;
- masks come back at the uploaded image's size (bilinear from the low-resolution logits), as
  logits when `return_logits` is true, else as booleans (logit > 0); `logits` are the
  low-resolution logits; all three are sorted by score, best first, and stringified
  (`str(array.tolist())`), exactly as ai-runner answers.

One object per request (one box, or one set of points), as the spec's fields describe.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError
from ..loading import model_load_errors, pick_device, resolve_model_source

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["SegmentAnything2Input", "SegmentAnything2Pipeline", "SegmentationResult"]

log = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: SAM 2 clamps low-resolution logits to this range (`sam2_image_predictor.py`).
_LOGIT_LIMIT = 32.0


@dataclass(frozen=True)
class SegmentAnything2Input:
    """One segmentation request: the image and the spec's prompts, as parsed from their JSON strings."""

    image: Image.Image
    point_coords: Any = None
    point_labels: Any = None
    box: Any = None
    mask_input: Any = None
    multimask_output: bool = True
    return_logits: bool = True
    normalize_coords: bool = True


@dataclass(frozen=True)
class SegmentationResult:
    """Masks sorted by score, best first.

    Attributes:
        masks: `(C, H, W)` at the image's size; float32 logits, or bool when thresholded.
        scores: `(C,)` float32 predicted IoU of each mask.
        logits: `(C, h, w)` float32 low-resolution logits (256x256 for SAM 2).
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    def to_response(self) -> dict[str, str]:
        """`MasksResponse`'s shape: each array as `str(array.tolist())`."""
        return {
            "masks": str(self.masks.tolist()),
            "scores": str(self.scores.tolist()),
            "logits": str(self.logits.tolist()),
        }


class SegmentAnything2Pipeline:
    """A SAM 2 model, loaded in `__init__` (call it in a worker thread).

    Args:
        model_id: Hugging Face id or local folder of a transformers SAM 2 checkpoint
            (`facebook/sam2-hiera-large`, ...).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        device: `"cuda"`, `"cpu"`, ...; default CUDA when available (bfloat16 autocast, as
            ai-runner), else CPU (float32).

    Raises:
        ModelLoadError: the model cannot be found or loaded.
    """

    task = "segment-anything-2"

    def __init__(self, model_id: str, *, model_dir: Path | None = None, device: str | None = None) -> None:
        from transformers import Sam2Model

        self.model_id = model_id
        self.device = pick_device(device)
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        kwargs = source.from_pretrained_kwargs()
        with model_load_errors("segment-anything-2 model", model_id):
            # The Hub checkpoints are `sam2_video` models; their image part loads as `Sam2Model`.
            model = Sam2Model.from_pretrained(source.pretrained_name, **kwargs)
        self._model: Any = model.to(self.device).eval()
        self.image_size: int = int(model.config.prompt_encoder_config.image_size)
        self._mean, self._std = _normalisation(source.pretrained_name, kwargs)
        log.info("segment-anything-2 %s loaded on %s (input %d px)", model_id, self.device, self.image_size)

    def __call__(self, image: Image.Image, **prompts: Any) -> dict[str, str]:
        """The API's call: prompts as parsed JSON; returns `MasksResponse`'s shape."""
        return self.segment(SegmentAnything2Input(image=image, **prompts)).to_response()

    def segment(self, request: SegmentAnything2Input) -> SegmentationResult:
        """Predict masks for the prompts of `request`.

        Raises:
            InvalidRequestError: malformed prompts (the message says which and why).
        """
        import numpy as np
        import torch
        import torch.nn.functional as F

        image = request.image.convert("RGB")
        width, height = image.size
        inputs = self._prompt_tensors(request, width, height)
        pixels = self._pixels(image)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else torch.autocast("cpu", enabled=False)
        )
        with torch.inference_mode(), autocast:
            out = self._model(pixel_values=pixels, multimask_output=request.multimask_output, **inputs)
        low_res = out.pred_masks[0, 0].float().clamp(-_LOGIT_LIMIT, _LOGIT_LIMIT)  # (C, h, w)
        scores = out.iou_scores[0, 0].float()
        masks = F.interpolate(low_res[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        order = torch.argsort(scores, descending=True, stable=True)
        masks_np = masks[order].cpu().numpy()
        if not request.return_logits:
            masks_np = masks_np > 0.0
        return SegmentationResult(
            masks=masks_np,
            scores=scores[order].cpu().numpy().astype(np.float32),
            logits=low_res[order].cpu().numpy().astype(np.float32),
        )

    def _pixels(self, image: Image.Image) -> Any:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        resized = image.resize((self.image_size, self.image_size), PILImage.Resampling.BILINEAR)
        array = (np.asarray(resized, dtype=np.float32) / 255.0 - self._mean) / self._std
        return torch.from_numpy(array.transpose(2, 0, 1).copy())[None].to(self.device)

    def _prompt_tensors(self, request: SegmentAnything2Input, width: int, height: int) -> dict[str, Any]:
        import numpy as np
        import torch

        size = self.image_size
        scale = np.array([size / width, size / height] if request.normalize_coords else [size, size], dtype=np.float32)
        inputs: dict[str, Any] = {}
        coords = _array(request.point_coords, "point_coords")
        labels = _array(request.point_labels, "point_labels")
        if coords is not None:
            if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
                raise InvalidRequestError(
                    f"point_coords must be a non-empty Nx2 array of [x, y] points, got shape {list(coords.shape)}."
                )
            if labels is None:
                raise InvalidRequestError("point_labels must be supplied if point_coords is supplied.")
            if labels.ndim != 1 or labels.shape[0] != coords.shape[0]:
                raise InvalidRequestError(
                    f"point_labels must hold one label per point: {coords.shape[0]} point(s), "
                    f"labels of shape {list(labels.shape)}."
                )
            if not np.all(labels == np.round(labels)):
                raise InvalidRequestError("point_labels must be integers (1 foreground, 0 background).")
            inputs["input_points"] = torch.from_numpy(coords * scale)[None, None].to(self.device)
            inputs["input_labels"] = torch.from_numpy(labels.astype(np.int64))[None, None].to(self.device)
        elif labels is not None:
            raise InvalidRequestError("point_labels given without point_coords.")
        box = _array(request.box, "box")
        if box is not None:
            if box.size != 4 or box.ndim > 2:
                raise InvalidRequestError(f"box must be 4 numbers [x1, y1, x2, y2], got shape {list(box.shape)}.")
            xyxy = box.reshape(2, 2) * scale
            inputs["input_boxes"] = torch.from_numpy(xyxy.reshape(4))[None, None].to(self.device)
        mask = _array(request.mask_input, "mask_input")
        if mask is not None:
            while mask.ndim > 2 and mask.shape[0] == 1:
                mask = mask.squeeze(0)  # typed, unlike `mask[0]` (Any), so mypy keeps `mask` narrowed
            if mask.ndim != 2 or min(mask.shape) == 0:
                raise InvalidRequestError(
                    f"mask_input must be a 1xHxW array of low-resolution mask logits, got shape {list(mask.shape)}."
                )
            inputs["input_masks"] = torch.from_numpy(mask)[None, None].to(self.device)
        return inputs


def _array(value: Any, name: str) -> np.ndarray | None:
    """A JSON value as a float32 array; ragged or non-numeric values are a 400."""
    import numpy as np

    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidRequestError(f"{name} must be a rectangular array of numbers.") from None
    if not np.all(np.isfinite(array)):
        raise InvalidRequestError(f"{name} must hold finite numbers.")
    return array


def _normalisation(name: str, kwargs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std from the checkpoint's `preprocessor_config.json`, else ImageNet's."""
    import numpy as np
    from transformers.utils import cached_file

    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    try:
        path = cached_file(name, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False, **kwargs)
    except OSError:
        path = None
    if path:
        config = json.loads(Path(path).read_text())
        mean = tuple(config.get("image_mean", mean))
        std = tuple(config.get("image_std", std))
    return np.array(mean, dtype=np.float32), np.array(std, dtype=np.float32)
