"""Cooperative cancellation of a batch job running in a worker thread.

The registry gives each job a `threading.Event` and sets it when the job's client disconnects
or the engine stops; the job's thread sees it through `cancel_scope`/`raise_if_cancelled`, which
pipelines call between steps (diffusers pipelines from their step callback).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import JobCancelled

__all__ = ["cancel_scope", "current_cancel_event", "raise_if_cancelled"]

_local = threading.local()


@contextmanager
def cancel_scope(event: threading.Event) -> Iterator[None]:
    """Make `event` the current thread's cancellation flag for the block."""
    previous = getattr(_local, "event", None)
    _local.event = event
    try:
        yield
    finally:
        _local.event = previous


def current_cancel_event() -> threading.Event | None:
    event: threading.Event | None = getattr(_local, "event", None)
    return event


def raise_if_cancelled() -> None:
    """Raise `JobCancelled` if the current thread's job has been cancelled."""
    event = current_cancel_event()
    if event is not None and event.is_set():
        raise JobCancelled("the job was cancelled: its client disconnected or the engine is stopping")
