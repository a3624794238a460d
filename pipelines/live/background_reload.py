"""A model reload off the frame path: the loader's thread, and the frame a stream shows meanwhile.

A params change that needs another model (a different base model, LoRA set, VAE or backend)
takes seconds to minutes to load. Done on the pipeline's own thread, between two batches, it
would freeze the stream for all that time. Instead the pipeline starts a `BackgroundLoad`,
keeps answering frames (with the old model, or with `reloading_frame`: the last output dimmed
under a "loading" line, as ai-runner does when `show_reloading_frame` is on), and swaps the new
model in between two batches once the load finished (`LivePipeline`'s optional
`pending_update` / `finish_update`). A load that fails leaves the old model in place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import torch

__all__ = ["BackgroundLoad", "reloading_frame"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How bright the last frame stays under the "loading" line.
DIM = 0.4


class BackgroundLoad(Generic[T]):
    """Runs `load()` once on a daemon thread of its own.

    `finished` completes when the load has (either way); the owner then calls `take()`
    between two batches; or it calls `abandon()`
    (closing, or a newer change replaced this one): a result that is ready is handed to
    `discard` at once, one still loading as soon as it is, so nothing it loaded outlives the
    owner's interest in it.
    """

    def __init__(self, name: str, load: Callable[[], T], discard: Callable[[T], None]) -> None:
        self._load = load
        self._discard = discard
        self._lock = threading.Lock()
        #: Done when the load is, loaded or failed (its result is `take()`'s, not this one's).
        self.finished: Future[None] = Future()
        self._result: T | None = None
        self._has_result = False
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        """True once the load finished (loaded or failed)."""
        return self.finished.done()

    def take(self) -> T:
        """The loaded result, once `done`; raises what the load raised. Call it once."""
        if not self.finished.done():
            raise RuntimeError("the background load has not finished")
        if self._error is not None:
            raise self._error
        with self._lock:
            if not self._has_result:
                raise RuntimeError("the background load's result was taken or discarded")
            result, self._result, self._has_result = self._result, None, False
        return result  # type: ignore[return-value]  # _has_result: it is a T

    def abandon(self, timeout: float) -> bool:
        """Give the result up: discarded now when ready, else when the load ends. Waits at
        most `timeout` s for the thread; returns True when it has ended."""
        with self._lock:
            self._abandoned = True
            ready, result = self._has_result, self._result
            self._result, self._has_result = None, False
        if ready:
            self._discard_logged(result)  # type: ignore[arg-type]
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        if alive:
            log.warning("%s: still loading after %g s; its result is discarded when it finishes", self._thread.name, timeout)
        return not alive

    def _run(self) -> None:
        try:
            result = self._load()
        except BaseException as exc:  # handed to the owner through take()
            log.info("%s: load failed: %r", self._thread.name, exc)
            self._error = exc
            self.finished.set_result(None)
            return
        with self._lock:
            keep = not self._abandoned
            if keep:
                self._result, self._has_result = result, True
        self.finished.set_result(None)
        if not keep:
            self._discard_logged(result)

    def _discard_logged(self, result: T) -> None:
        try:
            self._discard(result)
        except Exception:
            log.exception("%s: releasing an unwanted load failed", self._thread.name)


def reloading_frame(last: torch.Tensor, text: str = "loading...") -> torch.Tensor:
    """`last` (`(H, W, 3)` uint8 RGB, any device) dimmed, with `text` across its middle: what
    a stream shows while its new model loads (on the CPU)."""
    import cv2
    import numpy as np
    import torch

    image = np.ascontiguousarray((last.detach().to("cpu").float() * DIM).to(torch.uint8).numpy())
    height, width = image.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.25, width / 640)
    thickness = max(1, round(scale * 2))
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = (max(0, (width - text_w) // 2), (height + text_h) // 2)
    cv2.putText(image, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return torch.from_numpy(image)
