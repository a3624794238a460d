"""Processing sizes, and scaling a decoded frame to one."""

from __future__ import annotations

import av
import numpy as np

__all__ = ["fit_size", "resize_rgb"]

MIN_SIZE, MAX_SIZE, SIZE_STEP = 64, 1024, 8


def fit_size(width: int, height: int) -> tuple[int, int]:
    """The processing size for an input of `width`x`height` when params name none: the same
    aspect, at most 1024 on a side, multiples of 8, at least 64."""
    scale = min(1.0, MAX_SIZE / max(width, height))

    def _snap(v: float) -> int:
        return int(min(MAX_SIZE, max(MIN_SIZE, round(v / SIZE_STEP) * SIZE_STEP)))

    return _snap(width * scale), _snap(height * scale)


def resize_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """Scale to cover `width`x`height` keeping the aspect ratio, then centre-crop (ai-runner)."""
    if frame.width * height == frame.height * width:
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    scale = max(width / frame.width, height / frame.height)
    sw, sh = max(width, round(frame.width * scale)), max(height, round(frame.height * scale))
    rgb = frame.to_ndarray(format="rgb24", width=sw, height=sh)
    x, y = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(rgb[y : y + height, x : x + width])
