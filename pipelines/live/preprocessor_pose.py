"""The `openpose` / `pose_tensorrt` preprocessors: ViTPose keypoints drawn as an OpenPose skeleton.

The `pose` auxiliary model is a transformers `VitPoseForPoseEstimation` (default
`usyd-community/vitpose-base-simple`, COCO's 17 keypoints). ViTPose is a top-down model: it
takes one person box. Here the box is the whole frame (a live stream is mostly one person in
front of a camera): the frame is letterboxed into the model's input size (256x192 for the
published checkpoints, aspect kept, the rest padded with the ImageNet mean), ImageNet-normalised,
and each keypoint is its heatmap's arg-max, mapped back to the frame; its score is the
heatmap's peak. Several people, or one small in a wide shot, need a person detector first
(not done: see docs/realtime-diffusion.md).

Drawing (`draw_pose`) follows controlnet_aux's `draw_bodypose`, the images the OpenPose
ControlNets were trained on: COCO's keypoints reordered into OpenPose's 18 (the neck is the
mid-point of the shoulders), 17 limbs as filled ellipses of half-width 4 in 60 % of their
colour, then the joints as discs of radius 4 in full colour, on black; the sizes are for a
512-pixel short side and scale with the frame. Plain torch, on the worker's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["LIMBS", "OPENPOSE_COLORS", "coco_to_openpose", "detect_keypoints", "draw_pose", "pose"]

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


def detect_keypoints(image: torch.Tensor, model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO keypoints of the person filling `image` (`(1, 3, H, W)` in [0, 1]): `(17, 2)` x, y
    in frame pixels and `(17,)` scores (the heatmap peaks; 0 for a peak in the letterbox's
    padding, outside the frame)."""
    import torch
    import torch.nn.functional as F

    h, w = (int(s) for s in image.shape[-2:])
    size = getattr(model.config.backbone_config, "image_size", (256, 192))
    in_h, in_w = (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))
    s = min(in_h / h, in_w / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    top, left = (in_h - nh) // 2, (in_w - nw) // 2
    mean = torch.tensor(_IMAGENET_MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=image.device).view(1, 3, 1, 1)
    x = (F.interpolate(image.float(), size=(nh, nw), mode="bilinear", align_corners=False) - mean) / std
    canvas = torch.zeros(1, 3, in_h, in_w, device=image.device)
    canvas[..., top : top + nh, left : left + nw] = x
    param = next(model.parameters())
    kwargs: dict[str, Any] = {}
    if int(getattr(model.config.backbone_config, "num_experts", 1) or 1) > 1:  # ViTPose+: pick COCO's head
        kwargs["dataset_index"] = torch.zeros(1, dtype=torch.long, device=image.device)
    heat = model(pixel_values=canvas.to(param.dtype), **kwargs).heatmaps[0].float()  # (17, hh, hw)
    k, hh, hw = heat.shape
    score, flat = heat.reshape(k, -1).max(dim=1)
    hy, hx = (flat // hw).float(), (flat % hw).float()
    # heatmap cell centre -> model input pixel -> frame pixel
    ix = (hx + 0.5) * (in_w / hw) - 0.5
    iy = (hy + 0.5) * (in_h / hh) - 0.5
    fx = (ix - left + 0.5) / s - 0.5
    fy = (iy - top + 0.5) / s - 0.5
    inside = (fx >= -0.5) & (fx <= w - 0.5) & (fy >= -0.5) & (fy <= h - 0.5)
    return torch.stack([fx, fy], dim=1), torch.where(inside, score, torch.zeros_like(score))


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


def pose(image: torch.Tensor, model: Any, threshold: float) -> torch.Tensor:
    """The OpenPose skeleton image of the person filling `image`, `(1, 3, H, W)` in [0, 1]."""
    points, scores = detect_keypoints(image, model)
    op, valid = coco_to_openpose(points, scores, threshold)
    h, w = (int(s) for s in image.shape[-2:])
    return draw_pose(op, valid, h, w).to(image.dtype)


def load_pose_model(source: str, kwargs: dict[str, Any], *, device: Any, dtype: Any) -> Any:
    """`VitPoseForPoseEstimation.from_pretrained(source, **kwargs)` on `device`."""
    from transformers import VitPoseForPoseEstimation

    model = VitPoseForPoseEstimation.from_pretrained(source, dtype=dtype, **kwargs)
    return model.to(device).eval().requires_grad_(False)
