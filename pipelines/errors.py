"""Pipeline errors; the API maps each to one HTTP status in one place.

    PipelineError
     ├── InvalidRequestError (ValueError)   the request cannot be run as given      -> 400
     │    └── UnsupportedMediaError         an upload that cannot be decoded         -> 415
     ├── ModelMismatchError (ValueError)    model_id differs from the preloaded one -> 400
     ├── PipelineNotAvailableError          no implementation for this task yet      -> 503
     ├── PipelineBusyError                  the model's wait queue is full           -> 503
     ├── ModelLoadError                     the model could not be loaded            -> 503
     │    └── ModelNotFoundError (ValueError) the Hub says the model does not exist  -> 400
     ├── JobCancelled                       the client left, or the engine stops     -> 503
     └── InferenceError                     the model failed while running           -> 500

A model that cannot be loaded is the deployment's doing (not cached, no network), not the
server's: 503, one log line, and the registry remembers the failure for a while.
"""

from __future__ import annotations

__all__ = [
    "InferenceError",
    "InvalidRequestError",
    "JobCancelled",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelNotFoundError",
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


class ModelNotFoundError(ModelLoadError, ValueError):
    """The model id names no model: no such folder, and the Hugging Face Hub has no such repo."""


class JobCancelled(PipelineError):
    """A running job was stopped between steps: its client disconnected, or the engine is stopping."""


class InferenceError(PipelineError):
    """The model raised while running."""
