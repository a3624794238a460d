"""`noop`: the pass-through live pipeline (ai-runner's `noop`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..base import LiveParams

if TYPE_CHECKING:
    import torch

__all__ = ["NoopParams", "NoopPipeline", "RgbNoopPipeline"]


class NoopParams(LiveParams):
    """`noop` takes only the common params (output size)."""


class NoopPipeline:
    """Returns its input. Marked `passthrough`, so the engine skips the RGB round trip."""

    name: ClassVar[str] = "noop"
    params_model: ClassVar[type[LiveParams]] = NoopParams
    max_batch: ClassVar[int] = 8
    passthrough: ClassVar[bool] = True

    def load(self, params: LiveParams) -> None:
        pass

    def warm(self, width: int, height: int) -> None:
        pass

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        return frames

    def update_params(self, params: LiveParams) -> None:
        pass

    def close(self) -> None:
        pass


class RgbNoopPipeline(NoopPipeline):
    """`noop-rgb`: returns its input, but through the engine's pixel path (decode to RGB, a
    tensor batch, back to a frame), as every real pipeline. Benchmarks use it to price that
    round trip; ai-runner's `noop` pays it too."""

    name: ClassVar[str] = "noop-rgb"
    passthrough: ClassVar[bool] = False
    runs_inline: ClassVar[bool] = True
