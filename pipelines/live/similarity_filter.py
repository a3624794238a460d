"""StreamDiffusion's stochastic similarity filter: skip frames that barely differ.

The cosine similarity `c` between a frame and the last frame that was processed gives a skip
probability `max(0, 1 - (1 - c) / (1 - threshold))`: identical frames are always skipped,
frames at or below `threshold` never are. At most `max_skip_frame` frames are skipped in a row
(upstream counts skips since the last *forced* frame; we count consecutive skips). A skipped
frame costs no UNet or VAE work: the caller repeats its last output.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["SimilarityFilter", "skip_probability"]


def skip_probability(cosine: float, threshold: float) -> float:
    return max(0.0, min(1.0, 1.0 - (1.0 - cosine) / (1.0 - threshold)))


class SimilarityFilter:
    """Per-stream filter state. `should_skip(frame)` is True when the frame may be dropped."""

    def __init__(self, threshold: float = 0.98, max_skip_frame: int = 10, *, seed: int | None = 0) -> None:
        self.threshold = threshold
        self.max_skip_frame = max_skip_frame
        self._rng = random.Random(seed)
        self._last: torch.Tensor | None = None
        self._skipped_in_a_row = 0
        self.skipped = 0

    def configure(self, threshold: float, max_skip_frame: int) -> None:
        self.threshold = threshold
        self.max_skip_frame = max_skip_frame

    def reset(self) -> None:
        self._last = None
        self._skipped_in_a_row = 0

    def should_skip(self, frame: torch.Tensor) -> bool:
        """Args: frame: any tensor (the preprocessed input); compared flattened, in float32."""
        import torch

        flat = frame.detach().flatten().to(torch.float32)
        last = self._last
        if last is None or last.shape != flat.shape or self._skipped_in_a_row >= self.max_skip_frame:
            self._accept(flat)
            return False
        cosine = float(torch.nn.functional.cosine_similarity(flat, last, dim=0))
        if self._rng.random() < skip_probability(cosine, self.threshold):
            self._skipped_in_a_row += 1
            self.skipped += 1
            return True
        self._accept(flat)
        return False

    def _accept(self, flat: torch.Tensor) -> None:
        self._last = flat
        self._skipped_in_a_row = 0
