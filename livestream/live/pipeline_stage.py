"""A session's pipeline: load, process batches of frames, apply params, restart after a failure.

The pipeline runs in the stage's own thread (one per session; a GPU pipeline hands the batch
on to its shared GPU worker from there). Frames are grouped by processing size; a pass-through
pipeline at the input size never leaves the loop (nothing to compute).

**Bounds.** Every call into the pipeline is awaited for at most `call_timeout` (a batch) or
`load_timeout` (load, a new frame size's warm-up, params, a restart). A call that outlives its
bound raises `PipelineFailed("pipeline call stuck for N s")` (the session reports it and ends)
and marks the thread stuck. `close()` then runs the pipeline's `close` on a fresh thread (a
pipeline whose `close` unblocks its `process` frees the stuck thread that way); a thread still
stuck after `close`'s bound is logged and left behind: it is a daemon thread, so it never
holds the process open, and nothing waits on it any more. A healthy stage thread is always
joined.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from pipelines.base import LiveParams, LivePipeline, UpdatesInBackground
from pipelines.live import LivePipelineSpec
from pipelines.progress import Progress

from ..media.packets import OUTPUT_TIME_BASE
from ..media.sizes import fit_size, resize_rgb
from .events import now_ms
from .frames import InputFrame
from .stats import LatencyMeter

__all__ = ["PipelineFailed", "PipelineStage", "ProcessedFrame"]

log = logging.getLogger(__name__)

#: Longest an inline pipeline call may typically take before inline calls stop for the session:
#: a third of a frame at 30 fps, so that decoding never falls behind the input.
INLINE_MAX_SECONDS = 0.011


class PipelineFailed(Exception):
    """The pipeline cannot go on (it failed to load, or kept failing); the session ends."""


@dataclass(slots=True)
class ProcessedFrame:
    frame: av.VideoFrame
    #: Output timestamp on the 90 kHz clock (the input's, rescaled).
    pts: int
    #: When the frame's input bytes arrived (monotonic).
    arrival: float


def _output_pts(item: InputFrame) -> int:
    """The frame's pts on the output's 90 kHz clock (no Fraction arithmetic when it is on it)."""
    if item.time_base == OUTPUT_TIME_BASE:
        return item.pts
    return round(item.pts * item.time_base / OUTPUT_TIME_BASE)


_Job = tuple[Callable[..., Any], tuple[Any, ...], "Future[Any]"]


class _StageThread:
    """The stage's one thread: runs jobs in order until `stop()`; started by the first job.

    A daemon thread, so that one stuck in a pipeline call (abandoned by `PipelineStage.close`)
    never keeps the process from exiting; a healthy one is always joined.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        #: Held while a job runs: a call on another thread (`PipelineStage.process_here`) takes
        #: it without waiting, so the pipeline never runs on two threads at once.
        self.busy = threading.Lock()
        #: Set as the thread's last act.
        self.exited: Future[None] = Future()
        self._stopped = False

    @property
    def name(self) -> str:
        return self._thread.name

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if self._stopped:
            future.set_exception(RuntimeError("the pipeline thread has stopped"))
            return future
        if not self.started:
            self._thread.start()
        self._jobs.put((fn, args, future))
        return future

    def stop(self) -> None:
        """End the thread once the jobs queued so far have run. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.started:
            self._jobs.put(None)
        else:
            _settle(self.exited)

    def join(self, timeout: float) -> bool:
        """Wait (bounded) for a thread that has set `exited`; True when it is gone."""
        if self.started:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        while True:
            # Idle wait for work; `stop()` always ends it with None.
            job = self._jobs.get()
            if job is None:
                break
            fn, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with self.busy:
                    result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task
                future.set_exception(exc)
            else:
                future.set_result(result)
        _settle(self.exited)


class PipelineStage:
    """One session's pipeline instance and its thread; see the module docstring."""

    def __init__(
        self,
        spec: LivePipelineSpec,
        *,
        name: str,
        max_restarts: int,
        report: Callable[[str], None],
        emit: Callable[[dict[str, Any]], None],
        call_timeout: float = 60.0,
        load_timeout: float = 900.0,
    ) -> None:
        self.spec = spec
        self.max_restarts = max_restarts
        self.call_timeout = call_timeout
        self.load_timeout = load_timeout
        self._report = report
        self._emit = emit
        self._thread = _StageThread(f"live-pipeline-{name[:16]}")
        #: A call outlived its bound: the thread is busy with it, maybe for ever.
        self._stuck = False
        self._closed = False
        #: Guards `_pipeline`'s swaps: a stuck thread's load may finish while another closes.
        self._lock = threading.Lock()
        self._pipeline: LivePipeline | None = None
        self._params: LiveParams | None = None
        self.size: tuple[int, int] | None = None
        self.latency = LatencyMeter()
        self.frames_failed = 0
        self.restart_count = 0
        self.last_restart_time: int | None = None
        #: `process_here` may call a `runs_inline` pipeline (until an inline call fails or is slow).
        self._inline = True
        #: The last few inline calls' durations (s): one slow call on a loaded machine is not a
        #: slow pipeline.
        self._inline_took: deque[float] = deque(maxlen=8)
        #: How far a load is (`pipelines.progress`): log lines, and the status's `loading` field.
        self.progress = Progress(f"live {name}: {spec.name}")

    @property
    def max_batch(self) -> int:
        return max(1, int(getattr(self._pipeline, "max_batch", 1)))

    @property
    def device(self) -> str:
        return str(getattr(self._pipeline, "device", "cpu"))

    def pipeline_status(self) -> dict[str, Any] | None:
        """Optional pipeline figures (model, warm-up, backend), read from the loop: the
        pipeline keeps them as plain attributes its thread overwrites."""
        status = getattr(self._pipeline, "status", None)
        return status() if callable(status) else None

    async def _call(self, timeout: float, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the stage thread, awaited for at most `timeout`; past it the thread
        is marked stuck and `PipelineFailed` is raised (the call itself cannot be interrupted)."""
        if self._stuck:
            raise PipelineFailed("the pipeline thread is stuck in an earlier call")
        future = self._thread.submit(fn, *args)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            self._stuck = True
            log.error("pipeline %s: %s stuck for %g s on thread %s", self.spec.name, _name(fn), timeout, self._thread.name)
            raise PipelineFailed(f"pipeline call stuck for {timeout:g} s ({_name(fn)})") from None

    # --- lifetime -------------------------------------------------------------------------

    async def load(self, params: LiveParams) -> None:
        """Load a fresh instance with `params`; raises `PipelineFailed`. Cancelled, the load
        still finishes on the stage thread and `close()` closes what it loaded."""
        self._params = params
        try:
            await self._call(self.load_timeout, self._install, params, None)
        except PipelineFailed:
            raise
        except Exception as exc:
            raise PipelineFailed(f"pipeline {self.spec.name!r} failed to load: {exc}") from exc

    def _install(self, params: LiveParams, size: tuple[int, int] | None) -> None:
        """Pipeline thread: a fresh instance becomes the stage's (closed at once if the stage
        was closed meanwhile: a session cancelled during its load)."""
        pipeline = self._new(params, size)
        with self._lock:
            closed = self._closed
            if not closed:
                self._pipeline = pipeline
        if closed:
            log.info("pipeline %s: loaded after the stage closed; closing it", self.spec.name)
            pipeline.close()

    def _new(self, params: LiveParams, size: tuple[int, int] | None) -> LivePipeline:
        """Pipeline thread: a fresh instance, loaded (and warmed for `size`)."""
        pipeline = self.spec.factory()
        if hasattr(pipeline, "progress"):
            pipeline.progress = self.progress  # its long steps (download, compile) report as stages
        with self.progress.stage("load"):
            if not pipeline.passthrough:
                import torch  # noqa: F401  (slow first import: here, not on the first frame)
            pipeline.load(params)
        if size is not None:
            with self.progress.stage("warm-up"):
                pipeline.warm(*size)
        return pipeline

    def _close_pipeline(self) -> None:
        """Whichever thread runs it: close the current instance, once."""
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()

    async def close(self, timeout: float) -> None:
        """Close the pipeline and end the thread, each bounded by `timeout`; idempotent.

        The close and the thread's end are queued behind whatever the thread is doing (a
        load, say) before anything is awaited, so a cancelled `close` still cleans up. When
        the thread is stuck, the pipeline is closed on a fresh thread instead.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.progress.close()  # a load left behind stops logging that it is still loading
        thread = self._thread
        closing: Future[Any] | None = None
        if not self._stuck:
            closing = thread.submit(self._close_pipeline)
        thread.stop()
        if closing is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.wrap_future(closing)
            except TimeoutError:
                self._stuck = True
                log.error("pipeline %s: close() did not return within %g s on thread %s", self.spec.name, timeout, thread.name)
            except Exception:
                log.exception("pipeline %s: close() failed", self.spec.name)
        if self._stuck:
            await self._close_elsewhere(timeout)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wrap_future(thread.exited)
        except TimeoutError:
            pass
        if not thread.join(1.0):
            log.error(
                "pipeline %s: thread %s is stuck in a pipeline call; it is left behind as a daemon thread "
                "(abandoned: nothing waits on it, and it does not keep the process alive)",
                self.spec.name,
                thread.name,
            )

    async def _close_elsewhere(self, timeout: float) -> None:
        """The stage thread is stuck: run the pipeline's `close` on a fresh thread (bounded)."""
        if self._pipeline is None:
            return
        done: Future[None] = Future()

        def run() -> None:
            try:
                self._close_pipeline()
            except BaseException as exc:  # handed to the awaiting task
                _settle(done, exc)
            else:
                _settle(done)

        closer = threading.Thread(target=run, name=f"{self._thread.name}-close", daemon=True)
        log.warning("pipeline %s: thread %s is stuck; closing the pipeline on %s", self.spec.name, self._thread.name, closer.name)
        closer.start()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wrap_future(done)
        except TimeoutError:
            log.error(
                "pipeline %s: close() on %s did not return within %g s; that thread is left behind as a daemon thread",
                self.spec.name,
                closer.name,
                timeout,
            )
            return
        except Exception:
            log.exception("pipeline %s: close() failed", self.spec.name)
        closer.join(1.0)

    # --- params ---------------------------------------------------------------------------

    async def update_params(self, params: LiveParams) -> None:
        """Apply `params` between two batches (raises what the pipeline raises)."""
        pipeline = self._pipeline
        if pipeline is not None:
            await self._call(self.load_timeout, pipeline.update_params, params)
            pending = pipeline.pending_update if isinstance(pipeline, UpdatesInBackground) else None
            if pending is not None:  # a model loading in the background: frames go on meanwhile
                waiting = asyncio.wrap_future(pending)
                try:
                    await asyncio.wait([waiting], timeout=self.load_timeout)
                finally:
                    waiting.cancel()
                assert isinstance(pipeline, UpdatesInBackground)
                await self._call(self.call_timeout, pipeline.finish_update)  # raises why it failed
        self._params = params

    def _target_size(self, frame: av.VideoFrame) -> tuple[int, int]:
        p = self._params
        if p is None or (p.width is None and p.height is None):
            return fit_size(frame.width, frame.height)
        if p.width is not None and p.height is not None:
            return p.width, p.height
        w, h = frame.width, frame.height
        if p.width is not None:
            return fit_size(p.width, round(h * p.width / w))
        assert p.height is not None
        return fit_size(round(w * p.height / h), p.height)

    # --- frames ---------------------------------------------------------------------------

    async def process(self, batch: list[InputFrame]) -> list[ProcessedFrame]:
        """Frames through the pipeline; raises `PipelineFailed` when it cannot go on."""
        groups: list[tuple[tuple[int, int], list[InputFrame]]] = []
        for item in batch:
            size = self._target_size(item.frame)
            if groups and groups[-1][0] == size and groups[-1][1][0].frame.width == item.frame.width:
                groups[-1][1].append(item)
            else:
                groups.append((size, [item]))
        outputs: list[ProcessedFrame] = []
        for size, items in groups:
            pipeline = self._pipeline
            first = items[0].frame
            if pipeline is not None and pipeline.passthrough and size == self.size == (first.width, first.height):
                outputs.extend(self._job(size, items))  # nothing to compute: no thread hop
                continue
            # A new size warms the pipeline up first (a compile, maybe): the longer bound.
            timeout = self.call_timeout if size == self.size else self.load_timeout
            try:
                outputs.extend(await self._call(timeout, self._job, size, items))
            except PipelineFailed:
                self.frames_failed += len(items)
                raise
            except Exception as exc:
                self.frames_failed += len(items)
                await self._restart(exc)
        return outputs

    def process_here(self, item: InputFrame, *, compute: bool = True) -> ProcessedFrame | None:
        """The decoder's thread, while the session is idle: `item`'s output computed on the
        calling thread (no hop to the pipeline thread and back), or None to leave it to
        `process`. A pass-through pipeline at the frame's size gives the frame itself; with
        `compute`, a pipeline that `runs_inline` (cheap, CPU, never blocks) is called here when
        its thread is free and the size is warmed. An inline call that fails, or inline calls
        that typically (median of the last few) take longer than `INLINE_MAX_SECONDS`, turn
        inline calls off for the session (logged); a failed call's frame goes to `process`,
        which handles the failure the usual way."""
        pipeline, frame = self._pipeline, item.frame
        if pipeline is None or self._stuck:
            return None
        size = (frame.width, frame.height)
        if size != self.size or self._target_size(frame) != size:
            return None
        if pipeline.passthrough:
            self.latency.add(0.0)
            return ProcessedFrame(frame, _output_pts(item), item.arrival)
        if not (compute and self._inline and getattr(pipeline, "runs_inline", False)):
            return None
        if not self._thread.busy.acquire(blocking=False):
            return None
        try:
            if self._pipeline is not pipeline or self._closed:
                return None
            started = time.monotonic()
            (out,) = self._job(size, [item])
        except Exception:
            self._inline = False
            log.exception("pipeline %s: an inline call failed; frames go to the pipeline thread from now on", self.spec.name)
            return None
        finally:
            self._thread.busy.release()
        took = self._inline_took
        took.append(time.monotonic() - started)
        if len(took) >= 3 and (typical := statistics.median(took)) > INLINE_MAX_SECONDS:
            self._inline = False
            log.warning(
                "pipeline %s: inline calls take %.0f ms (> %.0f); frames go to the pipeline thread from now on",
                self.spec.name,
                typical * 1000,
                INLINE_MAX_SECONDS * 1000,
            )
        return out

    def _job(self, size: tuple[int, int], items: list[InputFrame]) -> list[ProcessedFrame]:
        """Pipeline thread: resize, convert, process, convert back."""
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("the pipeline is not loaded")
        if size != self.size:
            log.info("pipeline %s: frame size %s -> %s", self.spec.name, self.size, size)
            pipeline.warm(*size)
            self.size = size
        width, height = size
        started = time.monotonic()
        first = items[0].frame
        same_size = (first.width, first.height) == size
        if pipeline.passthrough and same_size:
            frames = [item.frame for item in items]
        elif pipeline.passthrough:  # resized only: no tensor (torch is not loaded for a pass-through
            # pipeline, and importing it here, seconds on a loaded machine, stalled the output)
            arrays = [resize_rgb(item.frame, width, height) for item in items]
            frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24") for a in arrays]
        else:
            if same_size:
                arrays = [item.frame.to_ndarray(format="rgb24") for item in items]
            else:
                arrays = [resize_rgb(item.frame, width, height) for item in items]
            import torch  # imported by `_new` already

            batch = torch.from_numpy(arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays))  # one: no copy
            result = pipeline.process(batch)
            if result.shape[0] != len(items):
                raise RuntimeError(f"pipeline returned {result.shape[0]} frames for {len(items)}")
            out = result.detach().to("cpu").numpy()
            frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24") for a in out]
        elapsed = (time.monotonic() - started) / len(items)
        outputs = []
        for item, frame in zip(items, frames, strict=True):
            self.latency.add(elapsed)
            outputs.append(ProcessedFrame(frame, _output_pts(item), item.arrival))
        return outputs

    async def _restart(self, exc: Exception) -> None:
        """After a pipeline exception: a fresh instance (counted), or `PipelineFailed`."""
        log.warning("pipeline %s raised: %r", self.spec.name, exc)
        if self.restart_count >= self.max_restarts:
            raise PipelineFailed(f"pipeline failed {self.restart_count + 1} times, ending the stream: {exc!r}") from exc
        self.restart_count += 1
        self.last_restart_time = now_ms()
        self._report(f"pipeline raised {exc!r}; restarting it ({self.restart_count}/{self.max_restarts})")
        self._emit(
            {
                "type": "restart",
                "pipeline": self.spec.name,
                "restart_count": self.restart_count,
                "restart_time": self.last_restart_time,
                "restart_logs": [repr(exc)],
            }
        )
        try:
            await self._call(self.load_timeout, self._close_pipeline)
        except PipelineFailed:
            raise
        except Exception:
            log.exception("pipeline %s: close() of the failed instance raised", self.spec.name)
        assert self._params is not None
        try:
            await self._call(self.load_timeout, self._install, self._params, self.size)
        except PipelineFailed:
            raise
        except Exception as reload_exc:
            raise PipelineFailed(f"pipeline failed to restart: {reload_exc!r}") from reload_exc


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _settle(future: Future[None], exc: BaseException | None = None) -> None:
    """Complete `future` unless a waiter that gave up (a bound ran out) cancelled it."""
    if not future.set_running_or_notify_cancel():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
