"""The two small pipeline protocols: batch (request -> result) and live (frames -> frames)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["BatchPipeline"]


@runtime_checkable
class BatchPipeline(Protocol):
    """A loaded model serving one batch task. Constructed by the registry with its model id.

    Loading happens in `__init__` (in a worker thread); task-specific call methods
    (e.g. `TextToImagePipeline.generate`) run in a worker thread, one at a time per model.
    """

    task: str
    model_id: str
