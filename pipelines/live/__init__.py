"""Live (frames -> frames) pipelines and their registry, keyed by the request's `model_id`.

Listing the registry imports only param classes; a pipeline's heavy imports (torch, models)
happen when the engine instantiates and loads it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..base import LiveParams, LivePipeline
from ..errors import InvalidRequestError
from .aux_models import AuxModels
from .color_filter import ColorFilterParams
from .diffusion_worker import WorkerPool
from .noop import NoopParams
from .streamdiffusion_params import VARIANTS as _STREAMDIFFUSION_VARIANTS

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


def _rgb_noop() -> LivePipeline:
    from .noop import RgbNoopPipeline

    return RgbNoopPipeline()


def _color_filter() -> LivePipeline:
    from .color_filter import ColorFilterPipeline

    return ColorFilterPipeline()


def _streamdiffusion(model_dir: Path | None, pool: WorkerPool, aux: AuxModels | None) -> Callable[[], LivePipeline]:
    def make() -> LivePipeline:
        from .streamdiffusion import StreamDiffusionPipeline

        return StreamDiffusionPipeline(model_dir=model_dir, pool=pool, aux=aux)

    return make


def default_live_registry(model_dir: Path | None = None, aux: AuxModels | None = None) -> LivePipelineRegistry:
    """The built-in pipelines: `noop`, `color-filter` and `streamdiffusion` (with ai-runner's
    variant names); `model_dir` is where model-backed pipelines look for models (MODEL_DIR).
    The streamdiffusion sessions share one `WorkerPool`: one GPU worker per loaded model."""
    pool = WorkerPool()
    registry = LivePipelineRegistry(
        [
            LivePipelineSpec("noop", NoopParams, _noop, "Pass-through: output frames are the input frames."),
            LivePipelineSpec(
                "noop-rgb",
                NoopParams,
                _rgb_noop,
                "Pass-through through the pixel path (RGB and back): what a pipeline costs the engine.",
            ),
            LivePipelineSpec(
                "color-filter",
                ColorFilterParams,
                _color_filter,
                "Colour grading on the CPU (hue, saturation, brightness, contrast, invert, strength).",
            ),
        ]
    )
    for name, params_model in _STREAMDIFFUSION_VARIANTS.items():
        registry.register(
            LivePipelineSpec(
                name,
                params_model,
                _streamdiffusion(model_dir, pool, aux),
                "Real-time img2img (StreamDiffusion's method): every frame restyled by a prompt.",
            )
        )
    return registry
