"""The two small pipeline protocols: batch (request -> result) and live (frames -> frames)."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

__all__ = ["BatchPipeline", "BatchPipelineClass", "LiveParams", "LivePipeline", "UpdatesInBackground", "params_schema"]


@runtime_checkable
class BatchPipeline(Protocol):
    """A loaded model serving one batch task.

    The registry (`pipelines.registry`) constructs it as `Class(model_id, model_dir=...)` in a
    worker thread: loading happens in `__init__` and raises `ModelLoadError` on failure. The
    task-specific call method (e.g. `TextToImagePipeline.generate(TextToImageInput)`) also runs
    in a worker thread, one call at a time per loaded model, so it needs no locking of its own.
    Bad requests raise `InvalidRequestError`; anything else it raises becomes `InferenceError`.
    """

    task: str
    model_id: str


class BatchPipelineClass(Protocol):
    """What `pipelines.registry.IMPLEMENTATIONS` names: a class loading a model in `__init__`."""

    def __call__(self, model_id: str, *, model_dir: Path | None = None) -> BatchPipeline: ...


class LiveParams(BaseModel):
    """Base of every live pipeline's params: a full parameter set, unknown fields rejected.

    `width`/`height` set the processing (and output) size; left out, the input's own size is
    kept (clamped to 64..1024, multiples of 8). Param classes must import without torch: the
    registry lists their JSON schema without loading any model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int | None = Field(default=None, ge=64, le=1024, multiple_of=8, description="Output width in pixels.")
    height: int | None = Field(default=None, ge=64, le=1024, multiple_of=8, description="Output height in pixels.")


@runtime_checkable
class LivePipeline(Protocol):
    """Frames in, frames out, with parameters that change while the stream runs.

    All methods run in a worker thread, never on the event loop, one call at a time.
    Frames are RGB `uint8` shaped `(N, H, W, 3)`; timestamps travel outside the pipeline, so
    `process` returns exactly one output frame per input frame, in order.

    Lifecycle: `load(params)` once, `warm(width, height)` before the first frame and again
    whenever the frame size changes mid-stream, then `process` per batch; `update_params`
    gets a validated full param set between batches.

    Optional: `status() -> dict` (figures such as load and warm-up times); when a pipeline
    has it, the session's status events carry its result as `pipeline_status`. It is called
    from the event loop, so it must only read attributes, never touch the model.

    Optional: a `progress` attribute (`pipelines.progress.Progress | None`, None on the class):
    the engine sets it before `load`, and long steps report through it as stages (`with
    self.progress.stage("compile", total=n) as stage: ... stage.advance()`); the session logs
    them and its status shows the current one as `loading`.

    Optional: a `runs_inline: ClassVar[bool]` (False when absent), for a cheap CPU pipeline
    whose `process` of one frame takes well under a frame interval and never blocks: while a
    session is idle the engine calls it on the stream's decoder thread (no thread hops; the
    frame still in that core's cache). A call that fails or takes longer than a third of a
    frame at 30 fps sends the session's frames back to the pipeline thread.

    Optional: `UpdatesInBackground`, for a pipeline whose `update_params` starts a slow change
    (a model reload) and returns before it is done.
    """

    #: Name in the live pipeline registry (the request's `model_id`).
    name: ClassVar[str]
    #: The pydantic params model (bounded `Field`s, `extra="forbid"`).
    params_model: ClassVar[type[LiveParams]]
    #: Most frames `process` takes at once.
    max_batch: ClassVar[int]
    #: True when `process` never changes pixels: the engine then skips the RGB round trip.
    passthrough: ClassVar[bool]

    def load(self, params: LiveParams) -> None: ...

    def warm(self, width: int, height: int) -> None: ...

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        """Args:
        frames: `(N, H, W, 3)` uint8 RGB on the CPU.

        Returns: `(N, H', W', 3)` uint8 RGB (any device), one frame per input frame.
        """
        ...

    def update_params(self, params: LiveParams) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class UpdatesInBackground(Protocol):
    """A live pipeline whose `update_params` may start a slow change in the background (a model
    reload) and return: the session keeps sending frames meanwhile, waits on the event loop
    for `pending_update`, then calls `finish_update()` on the pipeline's thread."""

    @property
    def pending_update(self) -> Future[None] | None:
        """Done when the background change is (either way); None when there is none."""
        ...

    def finish_update(self) -> None:
        """Between two batches: complete the change, or raise why it failed (the last good
        params stay)."""
        ...


def params_schema(model: type[LiveParams]) -> dict[str, Any]:
    """JSON schema of a params model, for `GET /live/pipelines`."""
    return model.model_json_schema()
