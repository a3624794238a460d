"""Model-backed ControlNet preprocessors batched across the streams of one worker tick.

Each stream's `begin` (`streamdiffusion._StreamSlot`) hands its depth and pose control images
over as `Deferred` calls instead of running the model itself (`defer`); the worker's tick then
calls `run_deferred` with every job's list once all streams began, before any step. Calls on
the same model with the same model-side settings (`_group_key`: the depth model and its
`detect_resolution`; the pose model and its person detector and `person_threshold`; HED and
line art, which run at a size set by the frame's, per frame size and their own settings) run as
one model call on the stacked frames: for depth and pose, frames of different sizes are resized
to the model's input first (which each does anyway), and each result is resized back to its own
frame. Per-stream
settings that do not touch the model (pose's `confidence_threshold`) apply per frame.

When a batched call fails, each call of the group is run alone so that one bad frame costs
only its own stream; a call that fails alone is that stream's error (the tick rejects its
frame). `Deferred.done` receives the control image (the slot's callback fits it to the
ControlNet and puts it in the stream's state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["BATCHED", "Deferred", "defer", "run_deferred"]

log = logging.getLogger(__name__)

#: Preprocessor names whose model calls batch across streams.
BATCHED = frozenset({"depth", "depth_tensorrt", "openpose", "pose_tensorrt", "hed", "lineart"})


@dataclass(eq=False)
class Deferred:
    """One stream's model-backed preprocessor call, run later with the tick's others.

    Attributes:
        name: the preprocessor (one of `BATCHED`).
        image: the frame, `(1, 3, H, W)` in [0, 1].
        params: the ControlNet entry's `preprocessor_params`.
        models: the worker's auxiliary models (`preprocessors.run`'s `models`).
        done: receives the control image, `(1, C, H, W)` in [0, 1].
    """

    name: str
    image: torch.Tensor
    params: Mapping[str, Any]
    models: Mapping[str, Any]
    done: Callable[[torch.Tensor], None]


def defer(name: str, models: Mapping[str, Any]) -> bool:
    """Whether preprocessor `name` is run batched (deferred to the tick) with these models:
    a `BATCHED` name whose model is loaded (without it, it is a passthrough: run now)."""
    from .preprocessors import MODEL_BACKED

    return name in BATCHED and models.get(MODEL_BACKED[name]) is not None


def _clamp(value: Any, low: float, high: float) -> float:
    return min(high, max(low, float(value)))


def _group_key(d: Deferred) -> tuple[Any, ...]:
    from .preprocessors import MODEL_BACKED

    kind = MODEL_BACKED[d.name]
    model = d.models[kind]
    if kind == "depth":
        return (kind, id(model), int(d.params.get("detect_resolution", 518)))
    size = tuple(int(v) for v in d.image.shape[-2:])
    if kind == "hed":  # runs at the frame's size: frames of one size batch
        return (kind, id(model), size, bool(d.params.get("safe", True)))
    if kind == "lineart":  # runs at a size set by the frame's: frames of one size batch
        return (kind, id(model), size, bool(d.params.get("coarse", True)), int(d.params.get("detect_resolution", 512)))
    detector = d.models.get("person_detector")
    return (kind, id(model), id(detector), _clamp(d.params.get("person_threshold", 0.5), 0.0, 1.0))


def _run_group(group: Sequence[Deferred]) -> list[torch.Tensor]:
    """The control images of calls that share `_group_key`, in one model call."""
    import torch

    from .preprocessors import MODEL_BACKED, depth_batch

    first = group[0]
    kind = MODEL_BACKED[first.name]
    images = [d.image for d in group]
    if kind == "depth":
        return depth_batch(images, first.models[kind], int(first.params.get("detect_resolution", 518)))
    if kind in ("hed", "lineart"):  # one frame size: stacked as they are
        from .preprocessors import run

        out = run(first.name, torch.cat(images), dict(first.params), {}, first.models)
        return list(out.split(1))
    from .preprocessor_pose import pose_batch

    return pose_batch(
        images,
        first.models[kind],
        [_clamp(d.params.get("confidence_threshold", 0.3), 0.0, 1.0) for d in group],
        first.models.get("person_detector"),
        _clamp(first.params.get("person_threshold", 0.5), 0.0, 1.0),
    )


def run_deferred(jobs: Sequence[Sequence[Deferred]]) -> list[BaseException | None]:
    """Run every job's deferred calls, one model call per group across jobs (see the module
    docstring); per job, the error of its first failed call, or None."""
    import torch

    errors: list[BaseException | None] = [None] * len(jobs)
    groups: dict[tuple[Any, ...], list[tuple[int, Deferred]]] = {}
    for j, calls in enumerate(jobs):
        for d in calls:
            groups.setdefault(_group_key(d), []).append((j, d))
    with torch.inference_mode():
        for members in groups.values():
            calls = [d for _, d in members]
            try:
                results: list[torch.Tensor | BaseException] = list(_run_group(calls))
            except Exception as exc:
                if len(calls) == 1:
                    results = [exc]
                else:
                    log.warning("preprocessor %s batched over %d streams failed (%r): running each alone", calls[0].name, len(calls), exc)
                    results = []
                    for d in calls:
                        try:
                            results.append(_run_group([d])[0])
                        except Exception as one:
                            results.append(one)
            for (j, d), result in zip(members, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("preprocessor %s failed for a stream: %r", d.name, result)
                    if errors[j] is None:
                        errors[j] = result
                    continue
                if errors[j] is None:
                    d.done(result)
    return errors
