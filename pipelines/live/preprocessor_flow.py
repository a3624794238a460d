"""The `temporal_net_tensorrt` preprocessor: TemporalNet2's control image from dense optical flow.

As the reference's TemporalNet preprocessor: the flow from the previous input frame to the
current one, drawn as the Middlebury colour wheel (`flow_to_image`: hue = direction, saturation
= magnitude relative to the frame's largest, zero flow white; torchvision's `flow_to_image`
computed the same way), and the control image `[previous input RGB, flow RGB]`, 6 channels
(`output_format: concat`, the default) or the flow image alone (`warped_only`, 3 channels).
The first frame (or one after a size change) gives `[current frame, zeros]` / zeros.
`flow_strength` (0..2) scales the flow before it is drawn; as in the reference, the drawing
normalises by the largest flow, so it changes nothing visible.

The flow is OpenCV's DIS (`DISOpticalFlow`, preset FAST) on the grey frames, on the CPU
(about 6 ms at 512x512 on one core), at the frame's size or `width`/`height` when given (then
resized back). The reference runs RAFT-small through torchvision and TensorRT; torchvision does
not import beside our torch, and DIS needs no weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["flow_to_image", "optical_flow", "temporal_net"]

#: Middlebury colour wheel segment lengths: red-yellow, yellow-green, green-cyan, cyan-blue,
#: blue-magenta, magenta-red.
_WHEEL = (15, 6, 4, 11, 13, 6)


def _colorwheel(device: Any) -> torch.Tensor:
    import torch

    ry, yg, gc, cb, bm, mr = _WHEEL
    rows: list[list[float]] = []
    rows += [[255, (255 * i) // ry, 0] for i in range(ry)]
    rows += [[255 - (255 * i) // yg, 255, 0] for i in range(yg)]
    rows += [[0, 255, (255 * i) // gc] for i in range(gc)]
    rows += [[0, 255 - (255 * i) // cb, 255] for i in range(cb)]
    rows += [[(255 * i) // bm, 0, 255] for i in range(bm)]
    rows += [[255, 0, 255 - (255 * i) // mr] for i in range(mr)]
    return torch.tensor(rows, dtype=torch.float32, device=device) / 255.0


def flow_to_image(flow: torch.Tensor) -> torch.Tensor:
    """`(2, H, W)` flow (x, y in pixels) -> `(3, H, W)` colour image in [0, 1]."""
    import torch

    flow = flow.float()
    norm = torch.sqrt((flow * flow).sum(dim=0))
    flow = flow / (norm.max() + torch.finfo(torch.float32).eps)
    u, v = flow[0], flow[1]
    rad = torch.sqrt(u * u + v * v)
    wheel = _colorwheel(flow.device)
    n = wheel.shape[0]
    a = torch.atan2(-v, -u) / torch.pi
    fk = (a + 1) / 2 * (n - 1)
    k0 = fk.floor().long().clamp(0, n - 1)
    k1 = torch.where(k0 + 1 == n, torch.zeros_like(k0), k0 + 1)
    f = (fk - k0.float()).unsqueeze(0)
    col = (1 - f) * wheel[k0].permute(2, 0, 1) + f * wheel[k1].permute(2, 0, 1)
    col = 1 - rad.unsqueeze(0) * (1 - col)
    return torch.floor(255 * col).clamp(0, 255) / 255.0


def _grey_u8(image: torch.Tensor) -> Any:
    grey = 0.299 * image[0, 0] + 0.587 * image[0, 1] + 0.114 * image[0, 2]
    return (grey.float().clamp(0, 1) * 255).round().to("cpu").byte().numpy()


def optical_flow(previous: torch.Tensor, current: torch.Tensor, memory: dict[str, Any] | None = None) -> torch.Tensor:
    """Dense flow from `previous` to `current` (`(1, 3, H, W)` in [0, 1]) as `(2, H, W)` x, y
    pixel offsets on the frames' device: a pixel at p in `previous` is at p + flow in `current`."""
    import cv2
    import numpy as np
    import torch

    dis = (memory or {}).get("dis")
    if dis is None:
        dis = cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_FAST)
        if memory is not None:
            memory["dis"] = dis
    a, b = _grey_u8(previous), _grey_u8(current)
    out = np.zeros((*a.shape, 2), dtype=np.float32)  # an output buffer (no initial flow: off by default)
    flow = np.asarray(dis.calc(a, b, out), dtype=np.float32)  # (H, W, 2)
    return torch.from_numpy(flow).to(current.device).permute(2, 0, 1).contiguous()


def temporal_net(image: torch.Tensor, params: dict[str, Any], memory: dict[str, Any]) -> torch.Tensor:
    """TemporalNet2's control image for `image` (see the module docstring); keeps the frame in
    `memory["previous_input"]` for the next call."""
    import torch
    import torch.nn.functional as F

    concat = str(params.get("output_format", "concat")) != "warped_only"
    previous = memory.get("previous_input")
    memory["previous_input"] = image.detach().clone()
    if previous is None or previous.shape != image.shape:
        return torch.cat([image, torch.zeros_like(image)], dim=1) if concat else torch.zeros_like(image)
    h, w = (int(s) for s in image.shape[-2:])
    fh = max(16, min(1024, int(params.get("height", h))))
    fw = max(16, min(1024, int(params.get("width", w))))
    a, b = previous, image
    if (fh, fw) != (h, w):
        a = F.interpolate(previous.float(), size=(fh, fw), mode="bilinear", align_corners=False)
        b = F.interpolate(image.float(), size=(fh, fw), mode="bilinear", align_corners=False)
    strength = min(2.0, max(0.0, float(params.get("flow_strength", 1.0))))
    rgb = flow_to_image(optical_flow(a, b, memory) * strength).unsqueeze(0)
    if (fh, fw) != (h, w):
        rgb = F.interpolate(rgb, size=(h, w), mode="bilinear", align_corners=False)
    rgb = rgb.to(image.dtype)
    return torch.cat([previous, rgb], dim=1) if concat else rgb
