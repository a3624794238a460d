"""The `openpose` / `pose_tensorrt` preprocessors: ViTPose keypoints drawn as an OpenPose skeleton.

The `pose` auxiliary model is a transformers `VitPoseForPoseEstimation` (default
`usyd-community/vitpose-base-simple`, COCO's 17 keypoints). ViTPose is a top-down model: it
takes one person box. The boxes come from the `person_detector` auxiliary model
(`preprocessor_person`, RT-DETR by default; `person_threshold` 0.5, at most 8 people); with no
detector, or no person found, the box is the whole frame (a live stream is mostly one person in
front of a camera). Each box is widened to the model's aspect ratio (and by 1.25 for a detected
box, as ViTPose's processor does), sampled into the model's input size (256x192 for the
published checkpoints; outside the frame the ImageNet mean), ImageNet-normalised, and each
keypoint is its heatmap's arg-max, mapped back to the frame; its score is the heatmap's peak.
`pose_batch` runs the detector once for every frame given and ViTPose once for every box of
every frame (`preprocessor_batch` hands it all streams of a worker tick).

Drawing (`draw_pose`) follows controlnet_aux's `draw_bodypose`, the images the OpenPose
ControlNets were trained on: COCO's keypoints reordered into OpenPose's 18 (the neck is the
mid-point of the shoulders), 17 limbs as filled ellipses of half-width 4 in 60 % of their
colour, then the joints as discs of radius 4 in full colour, on black; the sizes are for a
512-pixel short side and scale with the frame. Plain torch, on the worker's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .preprocessor_person import PersonDetector

__all__ = [
    "LIMBS",
    "OPENPOSE_COLORS",
    "coco_to_openpose",
    "detect_keypoints",
    "draw_people",
    "draw_pose",
    "keypoints_in_boxes",
    "pose",
    "pose_batch",
    "pose_crop",
]

#: OpenPose's 18 body keypoints, each from COCO's 17 (index), or None for the neck.
_OPENPOSE_FROM_COCO: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

#: The limbs drawn, as pairs of OpenPose indices, in drawing order (controlnet_aux's first 17).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

#: OpenPose's colours (RGB), limb i and joint i.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def pose_crop(image: torch.Tensor, box: Sequence[float] | None, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """ViTPose's input for one person: `box` (`(x0, y0, x1, y1)` frame pixels; None: the whole
    frame) widened to the model's aspect ratio (and by 1.25 for a detected box, as ViTPose's
    processor), sampled bilinearly into `size` `(h, w)`, ImageNet-normalised (outside the frame:
    the mean). Returns `(1, 3, h, w)` and the sampled region `(x0, y0, width, height)`."""
    import torch
    import torch.nn.functional as F

    in_h, in_w = size
    h, w = (int(s) for s in image.shape[-2:])
    x0, y0, x1, y1 = (0.0, 0.0, float(w), float(h)) if box is None else (float(v) for v in box)
    padding = 1.0 if box is None else 1.25
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    if bw * in_h > bh * in_w:
        bh = bw * in_h / in_w
    else:
        bw = bh * in_w / in_h
    bw, bh = bw * padding, bh * padding
    rx, ry = (x0 + x1) / 2 - bw / 2, (y0 + y1) / 2 - bh / 2
    mean = torch.tensor(_IMAGENET_MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=image.device).view(1, 3, 1, 1)
    theta = torch.tensor(
        [[[bw / w, 0.0, (2 * rx + bw) / w - 1], [0.0, bh / h, (2 * ry + bh) / h - 1]]], dtype=torch.float32, device=image.device
    )
    grid = F.affine_grid(theta, [1, 3, in_h, in_w], align_corners=False)
    crop = F.grid_sample((image.float() - mean) / std, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return crop, (rx, ry, bw, bh)


def input_size(model: Any) -> tuple[int, int]:
    """ViTPose's input `(height, width)` (256x192 for the published checkpoints)."""
    size = getattr(model.config.backbone_config, "image_size", (256, 192))
    return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))


def keypoints_in_boxes(
    images: Sequence[torch.Tensor], boxes: Sequence[Sequence[Sequence[float] | None]], model: Any
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """COCO keypoints of every person box of every frame, in one ViTPose call: per frame, per
    box, `(17, 2)` x, y frame pixels and `(17,)` scores (the heatmap peaks; 0 for a peak
    outside the frame). A box of None is the whole frame."""
    import torch

    size = input_size(model)
    crops, regions, owner = [], [], []
    for i, (image, frame_boxes) in enumerate(zip(images, boxes, strict=True)):
        for box in frame_boxes:
            crop, region = pose_crop(image, box, size)
            crops.append(crop)
            regions.append(region)
            owner.append(i)
    out: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in images]
    if not crops:
        return out
    param = next(model.parameters())
    x = torch.cat(crops).to(param.dtype)
    kwargs: dict[str, Any] = {}
    if int(getattr(model.config.backbone_config, "num_experts", 1) or 1) > 1:  # ViTPose+: pick COCO's head
        kwargs["dataset_index"] = torch.zeros(len(crops), dtype=torch.long, device=x.device)
    heats = model(pixel_values=x, **kwargs).heatmaps.float()  # (N, 17, hh, hw)
    in_h, in_w = size
    for heat, (rx, ry, bw, bh), i in zip(heats, regions, owner, strict=True):
        h, w = (int(s) for s in images[i].shape[-2:])
        k, hh, hw = heat.shape
        score, flat = heat.reshape(k, -1).max(dim=1)
        hy, hx = (flat // hw).float(), (flat % hw).float()
        # heatmap cell centre -> model input pixel -> frame pixel
        ix = (hx + 0.5) * (in_w / hw) - 0.5
        iy = (hy + 0.5) * (in_h / hh) - 0.5
        fx = rx + (ix + 0.5) * bw / in_w - 0.5
        fy = ry + (iy + 0.5) * bh / in_h - 0.5
        inside = (fx >= -0.5) & (fx <= w - 0.5) & (fy >= -0.5) & (fy <= h - 0.5)
        out[i].append((torch.stack([fx, fy], dim=1), torch.where(inside, score, torch.zeros_like(score))))
    return out


def detect_keypoints(image: torch.Tensor, model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO keypoints of the person filling `image` (`(1, 3, H, W)` in [0, 1]; the whole frame
    as the box): `(17, 2)` x, y in frame pixels and `(17,)` scores."""
    ((found,),) = keypoints_in_boxes([image], [[None]], model)
    return found


def coco_to_openpose(points: torch.Tensor, scores: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO's 17 keypoints -> OpenPose's 18 `(18, 2)` and which are present `(18,)`."""
    import torch

    present = scores >= threshold
    out = torch.zeros(18, 2, device=points.device, dtype=points.dtype)
    valid = torch.zeros(18, dtype=torch.bool, device=points.device)
    for i, c in enumerate(_OPENPOSE_FROM_COCO):
        if c is None:  # neck: between the shoulders (COCO 5 and 6)
            out[i] = (points[5] + points[6]) / 2
            valid[i] = present[5] & present[6]
        else:
            out[i] = points[c]
            valid[i] = present[c]
    return out, valid


def draw_pose(points: torch.Tensor, valid: torch.Tensor, height: int, width: int, *, device: Any = None) -> torch.Tensor:
    """OpenPose's skeleton of `points` (`(18, 2)` x, y; `valid` `(18,)`) as `(1, 3, H, W)` in [0, 1]."""
    import torch

    device = device if device is not None else points.device
    scale = max(0.25, min(height, width) / 512)
    stick, radius = 4.0 * scale, 4.0 * scale
    colors = torch.tensor(OPENPOSE_COLORS, dtype=torch.float32, device=device) / 255.0
    ys = torch.arange(height, dtype=torch.float32, device=device).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32, device=device).view(1, 1, width)
    pts = points.to(device=device, dtype=torch.float32)
    ok = valid.to(device)
    canvas = torch.zeros(3, height, width, device=device)

    a = torch.tensor([p for p, _ in LIMBS], device=device)
    b = torch.tensor([q for _, q in LIMBS], device=device)
    drawn = ok[a] & ok[b]
    if bool(drawn.any()):
        pa, pb = pts[a][drawn], pts[b][drawn]
        mid = (pa + pb) / 2
        d = pb - pa
        length = d.norm(dim=1).clamp_min(1e-6)
        ux, uy = (d[:, 0] / length).view(-1, 1, 1), (d[:, 1] / length).view(-1, 1, 1)
        rx, ry = xs - mid[:, 0].view(-1, 1, 1), ys - mid[:, 1].view(-1, 1, 1)
        along = (rx * ux + ry * uy) / (length / 2).view(-1, 1, 1).clamp_min(0.5)
        across = (-rx * uy + ry * ux) / stick
        inside = along * along + across * across <= 1.0  # (L, H, W)
        order = torch.arange(1, int(drawn.sum()) + 1, device=device).view(-1, 1, 1)
        last = (inside * order).amax(dim=0)  # the limb drawn last wins, as painting in order
        limb_colors = torch.cat([torch.zeros(1, 3, device=device), colors[: len(LIMBS)][drawn] * 0.6])
        painted = limb_colors[last].permute(2, 0, 1)
        canvas = torch.where(last.unsqueeze(0) > 0, painted, canvas)

    if bool(ok.any()):
        idx = torch.nonzero(ok).flatten()
        p = pts[idx]
        dist2 = (xs - p[:, 0].view(-1, 1, 1)) ** 2 + (ys - p[:, 1].view(-1, 1, 1)) ** 2
        inside = dist2 <= radius * radius
        order = torch.arange(1, len(idx) + 1, device=device).view(-1, 1, 1)
        last = (inside * order).amax(dim=0)
        joint_colors = torch.cat([torch.zeros(1, 3, device=device), colors[idx]])
        canvas = torch.where(last.unsqueeze(0) > 0, joint_colors[last].permute(2, 0, 1), canvas)
    return canvas.unsqueeze(0)


def draw_people(people: Sequence[tuple[torch.Tensor, torch.Tensor]], threshold: float, height: int, width: int) -> torch.Tensor:
    """Every person's OpenPose skeleton on one black `(1, 3, H, W)` image (later ones on top)."""
    import torch

    canvas: torch.Tensor | None = None
    for points, scores in people:
        op, valid = coco_to_openpose(points, scores, threshold)
        one = draw_pose(op, valid, height, width)
        canvas = one if canvas is None else torch.where(one.sum(dim=1, keepdim=True) > 0, one, canvas)
    if canvas is None:
        return torch.zeros(1, 3, height, width)
    return canvas


def pose_batch(
    images: Sequence[torch.Tensor],
    model: Any,
    thresholds: Sequence[float],
    detector: PersonDetector | None = None,
    person_threshold: float = 0.5,
) -> list[torch.Tensor]:
    """The OpenPose skeleton images of `images` (each `(1, 3, H, W)` in [0, 1]): the people the
    detector finds in each (one detector call for all frames; the whole frame when it finds
    none or there is no detector), their keypoints (one ViTPose call for all boxes), drawn."""
    boxes: list[list[Sequence[float] | None]] = [[None] for _ in images]
    if detector is not None:
        from .preprocessor_person import detect_people

        for i, found in enumerate(detect_people(images, detector, person_threshold)):
            if len(found):
                boxes[i] = [tuple(float(v) for v in box) for box in found.tolist()]
    people = keypoints_in_boxes(images, boxes, model)
    out = []
    for image, found, threshold in zip(images, people, thresholds, strict=True):
        h, w = (int(s) for s in image.shape[-2:])
        out.append(draw_people(found, threshold, h, w).to(device=image.device, dtype=image.dtype))
    return out


def pose(image: torch.Tensor, model: Any, threshold: float, detector: PersonDetector | None = None, person_threshold: float = 0.5) -> torch.Tensor:
    """The OpenPose skeleton image of the people in `image`, `(1, 3, H, W)` in [0, 1]."""
    (out,) = pose_batch([image], model, [threshold], detector, person_threshold)
    return out


def load_pose_model(source: str, kwargs: dict[str, Any], *, device: Any, dtype: Any) -> Any:
    """`VitPoseForPoseEstimation.from_pretrained(source, **kwargs)` on `device`."""
    from transformers import VitPoseForPoseEstimation

    model = VitPoseForPoseEstimation.from_pretrained(source, dtype=dtype, **kwargs)
    return model.to(device).eval().requires_grad_(False)
