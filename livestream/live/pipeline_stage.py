"""A session's pipeline: load, process batches of frames, apply params, restart after a failure.

The pipeline runs in the stage's own thread (one per session; a GPU pipeline hands the batch
on to its shared GPU worker from there). Frames are grouped by processing size; a pass-through
pipeline at the input size never leaves the loop (nothing to compute).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from pipelines.base import LiveParams, LivePipeline
from pipelines.live import LivePipelineSpec

from ..media.packets import OUTPUT_TIME_BASE
from ..media.sizes import fit_size, resize_rgb
from .events import now_ms
from .frames import InputFrame
from .stats import LatencyMeter

__all__ = ["PipelineFailed", "PipelineStage", "ProcessedFrame"]

log = logging.getLogger(__name__)


class PipelineFailed(Exception):
    """The pipeline cannot go on (it failed to load, or kept failing); the session ends."""


@dataclass(slots=True)
class ProcessedFrame:
    frame: av.VideoFrame
    #: Output timestamp on the 90 kHz clock (the input's, rescaled).
    pts: int
    #: When the frame's input bytes arrived (monotonic).
    arrival: float


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
    ) -> None:
        self.spec = spec
        self.max_restarts = max_restarts
        self._report = report
        self._emit = emit
        self._exec = ThreadPoolExecutor(1, thread_name_prefix=f"live-pipeline-{name[:16]}")
        self._pipeline: LivePipeline | None = None
        self._params: LiveParams | None = None
        self.size: tuple[int, int] | None = None
        self.latency = LatencyMeter()
        self.frames_failed = 0
        self.restart_count = 0
        self.last_restart_time: int | None = None

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

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    # --- lifetime -------------------------------------------------------------------------

    async def load(self, params: LiveParams) -> None:
        """Load a fresh instance with `params`; raises `PipelineFailed`."""
        self._params = params
        try:
            self._pipeline = await self._call(self._new, params, None)
        except Exception as exc:
            raise PipelineFailed(f"pipeline {self.spec.name!r} failed to load: {exc}") from exc

    def _new(self, params: LiveParams, size: tuple[int, int] | None) -> LivePipeline:
        """Pipeline thread: a fresh instance, loaded (and warmed for `size`)."""
        pipeline = self.spec.factory()
        if not pipeline.passthrough:
            import torch  # noqa: F401  (slow first import: here, not on the first frame)
        pipeline.load(params)
        if size is not None:
            pipeline.warm(*size)
        return pipeline

    async def close(self, timeout: float) -> None:
        """Close the pipeline (bounded) and end the thread. A close that fails or hangs is logged."""
        pipeline, self._pipeline = self._pipeline, None
        try:
            if pipeline is not None:
                async with asyncio.timeout(timeout):
                    await self._call(pipeline.close)
        except TimeoutError:
            log.error("pipeline %s: close() did not return within %.1f s; its thread is left behind", self.spec.name, timeout)
        except Exception:
            log.exception("pipeline %s: close() failed", self.spec.name)
        finally:
            self._exec.shutdown(wait=False, cancel_futures=True)

    # --- params ---------------------------------------------------------------------------

    async def update_params(self, params: LiveParams) -> None:
        """Apply `params` between two batches (raises what the pipeline raises)."""
        pipeline = self._pipeline
        if pipeline is not None:
            await self._call(pipeline.update_params, params)
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
            try:
                outputs.extend(await self._call(self._job, size, items))
            except Exception as exc:
                self.frames_failed += len(items)
                await self._restart(exc)
        return outputs

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
        else:
            if same_size:
                arrays = [item.frame.to_ndarray(format="rgb24") for item in items]
            else:
                arrays = [resize_rgb(item.frame, width, height) for item in items]
            import torch  # imported by `_new` already, unless pass-through

            batch = torch.from_numpy(np.stack(arrays))
            result = batch if pipeline.passthrough else pipeline.process(batch)
            if result.shape[0] != len(items):
                raise RuntimeError(f"pipeline returned {result.shape[0]} frames for {len(items)}")
            out = result.detach().to("cpu").numpy()
            frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24") for a in out]
        elapsed = (time.monotonic() - started) / len(items)
        outputs = []
        for item, frame in zip(items, frames, strict=True):
            self.latency.add(elapsed)
            pts = round(item.pts * item.time_base / OUTPUT_TIME_BASE)
            outputs.append(ProcessedFrame(frame, pts, item.arrival))
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
        old, self._pipeline = self._pipeline, None
        if old is not None:
            try:
                await self._call(old.close)
            except Exception:
                log.exception("pipeline %s: close() of the failed instance raised", self.spec.name)
        assert self._params is not None
        try:
            self._pipeline = await self._call(self._new, self._params, self.size)
        except Exception as reload_exc:
            raise PipelineFailed(f"pipeline failed to restart: {reload_exc!r}") from reload_exc
