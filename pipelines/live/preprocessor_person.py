"""Person boxes for the `openpose` / `pose_tensorrt` preprocessors: a transformers object detector.

ViTPose is a top-down model: it estimates the keypoints of one person inside a box. The boxes
come from the `person_detector` auxiliary model, a transformers `AutoModelForObjectDetection`
(default `PekingU/rtdetr_r50vd_coco_o365`, RT-DETR, the detector transformers' ViTPose docs
pair it with; DETR and YOLOS load the same way). Frames of any size are resized to the
detector's input size (its `preprocessor_config.json`'s `size`: 640x640 for RT-DETR; a
`shortest_edge` becomes a square) and stacked, so one call serves every stream of a tick;
rescaled to [0, 1] and ImageNet-normalised when the processor config says `do_normalize`.

Scores: a sigmoid per class when the model was trained with focal loss (RT-DETR:
`config.use_focal_loss`), else a softmax whose last class is "no object" (DETR, YOLOS). The
boxes kept are those of the class labelled `person` (`config.label2id`, any case) scoring at
least `threshold`, the `max_people` best, as `(x0, y0, x1, y1)` frame pixels clipped to the
frame. No person found: the caller uses the whole frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = ["PersonDetector", "detect_people", "load_person_detector"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PersonDetector:
    """A loaded detector and how to feed it.

    Attributes:
        model: the transformers object-detection model (eval, on the worker's device).
        size: its input `(height, width)`.
        normalize: ImageNet mean/std after rescaling to [0, 1] (DETR, YOLOS; not RT-DETR).
        person: the index of the `person` class.
        sigmoid: per-class sigmoid scores (focal loss) instead of a softmax with no-object last.
    """

    model: Any
    size: tuple[int, int]
    normalize: bool
    person: int
    sigmoid: bool

    def parameters(self) -> Any:
        """The model's parameters (what `next(model.parameters())` callers read)."""
        return self.model.parameters()


def _input_size(processor: dict[str, Any]) -> tuple[int, int]:
    size = processor.get("size") or {}
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            s = int(size["shortest_edge"])
            return s, s
    if isinstance(size, int):
        return size, size
    return 640, 640


def load_person_detector(source: str, kwargs: dict[str, Any], *, device: Any, dtype: Any) -> PersonDetector:
    """The detector at `source` (a folder or Hugging Face id; `kwargs` for `from_pretrained`).

    Raises:
        ModelLoadError: the model has no `person` class.
    """
    from transformers import AutoModelForObjectDetection
    from transformers.image_processing_utils import ImageProcessingMixin

    model = AutoModelForObjectDetection.from_pretrained(source, dtype=dtype, **kwargs)
    labels = {str(name).lower(): int(i) for name, i in (model.config.label2id or {}).items()}
    if "person" not in labels:
        raise ModelLoadError(f"the object detector {source} has no 'person' class (labels: {sorted(labels)[:10]})")
    try:
        processor, _ = ImageProcessingMixin.get_image_processor_dict(source, **kwargs)
    except OSError:  # no preprocessor_config.json: RT-DETR's defaults
        processor = {}
    return PersonDetector(
        model=model.to(device).eval().requires_grad_(False),
        size=_input_size(processor),
        normalize=bool(processor.get("do_normalize", False)),
        person=labels["person"],
        sigmoid=bool(getattr(model.config, "use_focal_loss", False)),
    )


def detect_people(images: Sequence[torch.Tensor], detector: PersonDetector, threshold: float, max_people: int = 8) -> list[torch.Tensor]:
    """Person boxes of each `(1, 3, H, W)` [0, 1] frame, all frames in one model call: per
    frame `(n, 4)` `(x0, y0, x1, y1)` in frame pixels, best first (n may be 0)."""
    import torch
    import torch.nn.functional as F

    if not images:
        return []
    in_h, in_w = detector.size
    x = torch.cat([F.interpolate(im.float(), size=(in_h, in_w), mode="bilinear", align_corners=False) for im in images])
    if detector.normalize:
        mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    param = next(detector.model.parameters())
    out = detector.model(pixel_values=x.to(param.dtype))
    logits = out.logits.float()
    probs = logits.sigmoid() if detector.sigmoid else logits.softmax(-1)[..., :-1]
    scores = probs[..., detector.person]  # (B, Q)
    boxes = out.pred_boxes.float()  # (B, Q, 4) centre x, centre y, w, h in [0, 1]
    result: list[torch.Tensor] = []
    for b, im in enumerate(images):
        h, w = (int(s) for s in im.shape[-2:])
        keep = torch.nonzero(scores[b] >= threshold).flatten()
        keep = keep[scores[b][keep].argsort(descending=True)][:max_people]
        cx, cy, bw, bh = boxes[b][keep].unbind(-1)
        xyxy = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], dim=-1)
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
        big = ((xyxy[:, 2] - xyxy[:, 0]) >= 1) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1)
        result.append(xyxy[big].to(im.device))
    return result
