"""Live (frames -> frames) pipelines and their registry, keyed by the request's `model_id`.

Listing the registry imports only param classes; a pipeline's heavy imports (torch, models)
happen when the engine instantiates and loads it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..base import LiveParams, LivePipeline
from ..errors import InvalidRequestError
from .color_filter import ColorFilterParams
from .noop import NoopParams

__all__ = ["LivePipelineRegistry", "LivePipelineSpec", "default_live_registry"]


@dataclass(frozen=True)
class LivePipelineSpec:
    """One live pipeline: its name, params model and a factory for fresh instances."""

    name: str
    params_model: type[LiveParams]
    factory: Callable[[], LivePipeline]
    description: str = ""


class LivePipelineRegistry:
    """Live pipelines by name. Each session gets its own instance from the spec's factory."""

    def __init__(self, specs: list[LivePipelineSpec] | None = None) -> None:
        self._specs: dict[str, LivePipelineSpec] = {}
        for spec in specs or []:
            self.register(spec)

    def register(self, spec: LivePipelineSpec) -> None:
        self._specs[spec.name] = spec

    def get(self, name: str) -> LivePipelineSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise InvalidRequestError(f"Unknown live pipeline {name!r}; available: {known}.") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[LivePipelineSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))


def _noop() -> LivePipeline:
    from .noop import NoopPipeline

    return NoopPipeline()


def _color_filter() -> LivePipeline:
    from .color_filter import ColorFilterPipeline

    return ColorFilterPipeline()


def default_live_registry() -> LivePipelineRegistry:
    """The built-in CPU pipelines: `noop` and `color-filter`."""
    return LivePipelineRegistry(
        [
            LivePipelineSpec("noop", NoopParams, _noop, "Pass-through: output frames are the input frames."),
            LivePipelineSpec(
                "color-filter",
                ColorFilterParams,
                _color_filter,
                "Colour grading on the CPU (hue, saturation, brightness, contrast, invert, strength).",
            ),
        ]
    )
