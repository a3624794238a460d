"""Pipeline errors; the API maps each to one HTTP status in one place.

    PipelineError
     ├── InvalidRequestError (ValueError)   the request cannot be run as given      -> 400
     │    └── UnsupportedMediaError         an upload that cannot be decoded         -> 415
     ├── ModelMismatchError (ValueError)    model_id differs from the preloaded one -> 400
     ├── PipelineNotAvailableError          no implementation for this task yet      -> 503
     ├── PipelineBusyError                  the model's wait queue is full           -> 503
     ├── ModelLoadError                     the model could not be loaded            -> 500
     └── InferenceError                     the model failed while running           -> 500
"""

from __future__ import annotations

__all__ = [
    "InferenceError",
    "InvalidRequestError",
    "ModelLoadError",
    "ModelMismatchError",
    "PipelineBusyError",
    "PipelineError",
    "PipelineNotAvailableError",
    "UnsupportedMediaError",
]


class PipelineError(Exception):
    """Base class of pipeline errors."""


class InvalidRequestError(PipelineError, ValueError):
    """The request is well-formed but cannot be run (bad size, bad JSON field, ...)."""


class UnsupportedMediaError(InvalidRequestError):
    """An uploaded media file cannot be decoded (unsupported format, malformed or empty)."""


class ModelMismatchError(PipelineError, ValueError):
    """A request names a model other than the one this runner was started with."""


class PipelineNotAvailableError(PipelineError):
    """No pipeline implements this task (yet)."""


class PipelineBusyError(PipelineError):
    """The model is busy and its wait queue is full."""


class ModelLoadError(PipelineError):
    """The model could not be loaded."""


class InferenceError(PipelineError):
    """The model raised while running."""
