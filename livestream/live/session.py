"""One live stream end to end: an ingest, decode, queue, pipeline, one encode, fanned-out outputs.

    async with Session(request, spec, config, http, ingest=...) as session:
        await session.run()          # returns when the input ends or the session is stopped

The input is an `Ingest` (`ingest.py`: trickle MPEG-TS by default, RTMP, WHIP); the outputs are
the built-in trickle MPEG-TS egress (when the request has a `publish_url`) and any number of
`PacketSink`s (`sinks.py`: RTMP push, WHEP viewers) attached before or while the session runs.
Inside `run()` a TaskGroup owns the tasks; codec and pipeline work happen in threads:

    ingest task: Ingest.run(self) ──frames──▶ FrameQueue (bounded, drops oldest)
      (its own decode thread)  │ audio               │
                               ▼                     ▼
                       encoder.push_audio    process task ─▶ pipeline thread
                                                     │
    egress task ◀── Outbox ◀── TsSegmenter ◀── encoder thread ─▶ SinkFanout ─▶ sink tasks
      (trickle POST per segment)                  (EncodedPacket, bounded queue per sink)

    control task: control channel ─▶ latest-params slot (applied between batches)
    status task: status event every `status_interval`; events task: events channel

`stop()` is graceful (the input is cut, queued frames are encoded, the last segment closes);
past `stop_timeout` everything is aborted. A failure ends only this session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
import numpy as np

from pipelines.base import LiveParams, LivePipeline
from pipelines.live import LivePipelineSpec
from trickle import TrickleClientError, TrickleError, TricklePublisher, TrickleStreamNotFoundError, TrickleSubscriber

from .config import SessionConfig, StartRequest
from .control import ControlError, merge_params, parse_control
from .events import STREAM_TRACE, encode_event, error_event, now_ms, trace_event
from .frames import FrameQueue, InputFrame, StreamEnded
from .ingest import Ingest, IngestError, InputStalled, TrickleIngest
from .media import (
    OUTPUT_TIME_BASE,
    AudioSource,
    EncoderConfig,
    Outbox,
    SegmentedEncoder,
    fit_size,
    resize_rgb,
)
from .sinks import PacketSink, SinkFanout
from .stats import LatencyMeter, RateMeter

__all__ = ["Session", "SessionConfig", "SessionState", "StartRequest"]

log = logging.getLogger(__name__)


class SessionState:
    """ai-runner's pipeline states (`live/process/status.py`)."""

    LOADING = "LOADING"
    ONLINE = "ONLINE"
    DEGRADED_INPUT = "DEGRADED_INPUT"
    DEGRADED_INFERENCE = "DEGRADED_INFERENCE"
    OFFLINE = "OFFLINE"
    ERROR = "ERROR"


@dataclass(slots=True)
class _Output:
    frame: av.VideoFrame
    pts: int
    arrival: float


def _sink_status(sink: PacketSink) -> dict[str, Any]:
    status = getattr(sink, "status", None)
    base: dict[str, Any] = {"name": sink.name, "dropped": getattr(sink, "dropped", 0)}
    return base | (status() if callable(status) else {})


class Session:
    """A live video session; see the module docstring. One instance per stream."""

    def __init__(
        self,
        request: StartRequest,
        spec: LivePipelineSpec,
        config: SessionConfig,
        http: aiohttp.ClientSession,
        *,
        on_pipeline_failure: Callable[[], None] | None = None,
        ingest: Ingest | None = None,
    ) -> None:
        self.request = request
        if ingest is None:
            if not request.subscribe_url:
                raise ValueError("a session needs an ingest or a subscribe_url")
            ingest = TrickleIngest(request.subscribe_url, http, timeout=config.input_timeout)
        #: Where the frames come from (`ingest.py`).
        self.ingest = ingest
        self.stream_id = request.stream_id
        self.spec = spec
        self.config = config
        self._http = http
        self._on_pipeline_failure = on_pipeline_failure
        self.params: LiveParams = request.params if request.params is not None else spec.params_model()
        self._pending_params: LiveParams | None = None
        self._params_ready = asyncio.Event()
        self._log = logging.LoggerAdapter(log, {"stream_id": self.stream_id})

        self._pipeline: LivePipeline | None = None
        self._pipe_exec: ThreadPoolExecutor | None = None
        self._encode_exec: ThreadPoolExecutor | None = None
        self._stop_requested = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished = asyncio.Event()
        self._closed = False

        # events
        self._events: deque[tuple[dict[str, Any], str] | None] = deque()
        self._events_ready = asyncio.Event()
        self.events_dropped = 0
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=100)

        # figures
        self.start_time = now_ms()
        self.state = SessionState.LOADING
        self.last_state_update_time = self.start_time
        self.end_reason: str | None = None
        self.error: str | None = None
        self.input_fps = RateMeter()
        self.output_fps = RateMeter()
        self.pipeline_latency = LatencyMeter()
        self.e2e_latency = LatencyMeter()
        self.last_input_time: int | None = None
        self._last_input_mono: float | None = None
        self.last_output_time: int | None = None
        self.first_output_time: int | None = None
        self.last_params_update_time: int | None = None
        self._params_reported = False
        self.last_error_time: int | None = None
        self.last_error: str | None = None
        self.last_restart_time: int | None = None
        self.restart_count = 0
        self.frames_in = 0
        self.frames_out = 0
        self.frames_failed = 0
        self.output_segments = 0
        self.control_messages = 0
        self.control_coalesced = 0
        self.size: tuple[int, int] | None = None
        self._last_status_timestamp: int | None = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: FrameQueue | None = None
        self._encoder: SegmentedEncoder | None = None
        self._outbox: Outbox | None = None
        #: Packet outputs besides the trickle egress (`sinks.py`).
        self.sinks = SinkFanout(self.report_error)

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        loop = self._loop = asyncio.get_running_loop()
        self._pipe_exec = ThreadPoolExecutor(1, thread_name_prefix=f"live-pipeline-{self.stream_id[:16]}")
        self._encode_exec = ThreadPoolExecutor(1, thread_name_prefix=f"live-encode-{self.stream_id[:16]}")
        self._queue = FrameQueue(loop, max_frames=self.config.max_queue_frames, max_lag=self.config.max_queue_lag)
        self._outbox = Outbox(self.config.max_output_bytes)
        # The encode thread collects the muxer's output per job; `_deliver` hands it to the
        # outbox on the loop when the job completes (one wake-up per job, not per write).
        self._encoded: list[Any] = []
        self._encoder = SegmentedEncoder(
            self.config.encoder,
            on_data=self._encoded.append,
            on_cut=lambda: self._encoded.append(Outbox.CUT),
            on_packet=self.sinks.put,
            ts_output=bool(self.request.publish_url),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release threads and the pipeline. Idempotent; `run()` must have returned."""
        if self._closed:
            return
        self._closed = True
        self.stop("closed")
        self.ingest.abort()
        await self.sinks.aclose(0)
        if self._queue is not None:
            self._queue.close()
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None and self._pipe_exec is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._pipe_exec, pipeline.close), 5)
        for ex in (self._pipe_exec, self._encode_exec):
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)

    def stop(self, reason: str = "stopped") -> None:
        """Ask the session to end: input is cut, queued frames drain, the last segment closes."""
        if self.end_reason is None:
            self.end_reason = reason
        self._stop_requested.set()

    def _fail(self, message: str) -> None:
        """End now because of an error (no draining)."""
        self._log.warning("session failing: %s", message)
        self.error = self.error or message
        self.stop(message)
        self.ingest.abort()
        if self._queue is not None:
            self._queue.clear()
            self._queue.close()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    async def run(self) -> None:
        """Run the stream until its input ends, it is stopped, or it fails."""
        self._emit(trace_event("runner_receive_stream_request"), STREAM_TRACE)
        events_task = asyncio.create_task(self._events_loop(), name=f"live-events-{self.stream_id}")
        try:
            await self._run_media()
        except Exception as exc:  # a bug or an unexpected failure: this session only
            self._log.exception("session failed")
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        finally:
            self._set_state(SessionState.ERROR if self.error else SessionState.OFFLINE)
            if self.end_reason is None:
                self.end_reason = "input ended"
            self._emit(self.status(final=True))
            self._events.append(None)
            self._events_ready.set()
            try:
                async with asyncio.timeout(3.0):
                    await asyncio.shield(events_task)
            except TimeoutError:
                events_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await events_task
            self._finished.set()
            self._log.info("session ended: %s", self.error or self.end_reason)

    async def _run_media(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._pipeline = await loop.run_in_executor(self._pipe_exec, self._load_pipeline)
        except Exception as exc:
            self._report_error(f"pipeline {self.spec.name!r} failed to load: {exc}")
            self.error = self.last_error
            if self._on_pipeline_failure is not None:
                self._on_pipeline_failure()
            return
        if self._stop_requested.is_set():
            return
        self._set_state(SessionState.ONLINE)
        async with asyncio.TaskGroup() as tg:
            t = self._tasks
            t["ingest"] = tg.create_task(self._ingest(), name=f"live-ingest-{self.stream_id}")
            t["process"] = tg.create_task(self._process(), name=f"live-process-{self.stream_id}")
            t["egress"] = tg.create_task(self._egress(), name=f"live-egress-{self.stream_id}")
            aux = [
                tg.create_task(self._status_loop(), name=f"live-status-{self.stream_id}"),
                tg.create_task(self._watchdog(), name=f"live-watchdog-{self.stream_id}"),
                tg.create_task(self._params_loop(), name=f"live-params-{self.stream_id}"),
            ]
            if self.request.control_url:
                aux.append(tg.create_task(self._control(), name=f"live-control-{self.stream_id}"))
            await asyncio.wait([t["egress"], t["process"], t["ingest"]], return_when=asyncio.ALL_COMPLETED)
            await self.sinks.aclose(self.config.stop_timeout)
            for task in aux:
                task.cancel()

    def _load_pipeline(self) -> LivePipeline:
        """Pipeline thread: a fresh instance, loaded with the current params."""
        pipeline = self.spec.factory()
        if not pipeline.passthrough:
            import torch  # noqa: F401  (slow first import: here, not on the first frame)
        pipeline.load(self.params)
        return pipeline

    async def _watchdog(self) -> None:
        """Turns a stop request into a cut input, then into an abort after `stop_timeout`."""
        await self._stop_requested.wait()
        self.ingest.stop()
        await asyncio.sleep(self.config.stop_timeout)
        self._log.warning("stop took longer than %.1f s; aborting", self.config.stop_timeout)
        self.ingest.abort()
        if self._queue is not None:
            self._queue.clear()
            self._queue.close()
        for name in ("process", "egress", "ingest"):
            self._tasks[name].cancel()

    # --- ingest and decode ----------------------------------------------------------------

    async def _ingest(self) -> None:
        assert self._queue is not None
        try:
            await self.ingest.run(self)
        except InputStalled as exc:
            self._report_error(str(exc))
            self.error = self.error or self.last_error
            self.end_reason = "input stalled"
        except IngestError as exc:
            self._report_error(str(exc))
            self.error = self.error or self.last_error
        finally:
            self._queue.close()

    # FrameTarget (`ingest.py`): called by the ingest, from its decode thread or the loop.

    def put_video(self, frame: av.VideoFrame, arrival: float | None = None) -> None:
        self._on_decoded(frame, time.monotonic() if arrival is None else arrival)

    def put_audio(self, item: av.AudioFrame | av.Packet) -> None:
        if self._encoder is not None:
            self._encoder.push_audio(item)

    def set_audio_source(self, source: AudioSource | None) -> None:
        if self._encoder is not None:
            self._encoder.set_audio_source(source)

    def report_error(self, message: str) -> None:
        """Any thread: a non-fatal problem, as an `error` event."""
        self._on_decode_error(message)

    def on_input(self) -> None:
        self._mark_input()

    def trace(self, name: str) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._emit, trace_event(name), STREAM_TRACE)

    def _mark_input(self) -> None:
        self._last_input_mono = time.monotonic()
        self.last_input_time = now_ms()

    # --- outputs --------------------------------------------------------------------------

    def attach_sink(self, sink: PacketSink) -> None:
        """Loop: add an output while the session runs (or before); it starts at a keyframe."""
        self.sinks.attach(sink)
        self.request_keyframe()

    async def detach_sink(self, sink: PacketSink, timeout: float = 0.0) -> None:
        """Loop: remove an output and await its task; the other outputs go on."""
        await self.sinks.detach(sink, timeout)

    def request_keyframe(self) -> None:
        """The next encoded frame is an IDR (for a sink that joins or reconnects)."""
        if self._encoder is not None:
            self._encoder.request_keyframe()

    def _on_decoded(self, frame: av.VideoFrame, arrival: float) -> None:
        """Decoder thread: queue the frame (never blocks)."""
        assert self._queue is not None
        if frame.pts is None or frame.time_base is None:
            return
        self.frames_in += 1
        self.input_fps.tick()
        self._queue.put(InputFrame(frame, frame.pts, frame.time_base, arrival))

    def _on_decode_error(self, message: str) -> None:
        """Decoder thread: report a skipped or damaged segment on the loop."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
            self._loop.call_soon_threadsafe(self._report_error, message)

    # --- process and encode ---------------------------------------------------------------

    async def _process(self) -> None:
        assert self._queue is not None and self._outbox is not None and self._encoder is not None
        loop = asyncio.get_running_loop()
        queue, outbox, encoder = self._queue, self._outbox, self._encoder
        pending: asyncio.Future[list[Any]] | None = None
        try:
            while True:
                try:
                    batch = await queue.get_batch(self._max_batch())
                except StreamEnded:
                    break
                outputs = await self._run_pipeline(batch)
                if outputs is None:
                    break
                if not outputs:
                    continue
                if pending is not None:
                    await pending
                await outbox.wait_room()
                pending = loop.run_in_executor(self._encode_exec, self._encode, outputs)
                pending.add_done_callback(self._deliver)
        finally:
            try:
                if pending is not None:
                    await pending
                outbox.extend(await loop.run_in_executor(self._encode_exec, self._close_encoder, encoder))
            finally:
                outbox.end()

    def _deliver(self, job: asyncio.Future[list[Any]]) -> None:
        """Loop: an encode job's output to the egress (errors surface where the job is awaited)."""
        if not job.cancelled() and job.exception() is None and self._outbox is not None:
            self._outbox.extend(job.result())

    def _take_encoded(self) -> list[Any]:
        items = self._encoded.copy()
        self._encoded.clear()
        return items

    def _close_encoder(self, encoder: SegmentedEncoder) -> list[Any]:
        """Encode thread: flush and end the last segment; its output."""
        try:
            encoder.close()
        finally:
            items = self._take_encoded()
        return items

    def _max_batch(self) -> int:
        return max(1, int(getattr(self._pipeline, "max_batch", 1)))

    def _encode(self, outputs: list[_Output]) -> list[Any]:
        """Encode thread: encode a batch; returns the muxer output (bytes and cuts)."""
        assert self._encoder is not None
        try:
            for out in outputs:
                if self._encoder.encode(out.frame, out.pts):
                    done = time.monotonic()
                    self.e2e_latency.add(done - out.arrival)
                    self.frames_out += 1
                    if self.first_output_time is None:
                        self.first_output_time = now_ms()
                    self.output_fps.tick(now=done)
            self.last_output_time = now_ms()
        finally:
            items = self._take_encoded()
        return items

    def _target_size(self, frame: av.VideoFrame) -> tuple[int, int]:
        p = self.params
        if p.width is not None and p.height is not None:
            return p.width, p.height
        if p.width is not None or p.height is not None:
            w, h = frame.width, frame.height
            if p.width is not None:
                return fit_size(p.width, round(h * p.width / w))
            assert p.height is not None
            return fit_size(round(w * p.height / h), p.height)
        return fit_size(frame.width, frame.height)

    async def _run_pipeline(self, batch: list[InputFrame]) -> list[_Output] | None:
        """Frames through the pipeline (in its thread); None when the session must end."""
        loop = asyncio.get_running_loop()
        groups: list[tuple[tuple[int, int], list[InputFrame]]] = []
        for item in batch:
            size = self._target_size(item.frame)
            if groups and groups[-1][0] == size and groups[-1][1][0].frame.width == item.frame.width:
                groups[-1][1].append(item)
            else:
                groups.append((size, [item]))
        outputs: list[_Output] = []
        pipeline = self._pipeline
        for size, items in groups:
            first = items[0].frame
            if pipeline is not None and pipeline.passthrough and size == self.size == (first.width, first.height):
                # Nothing to compute: skip the hop to the pipeline thread.
                outputs.extend(self._pipeline_job(size, items))
                continue
            try:
                outputs.extend(await loop.run_in_executor(self._pipe_exec, self._pipeline_job, size, items))
            except Exception as exc:
                self.frames_failed += len(items)
                if not await self._restart_pipeline(exc):
                    return None
        return outputs

    def _pipeline_job(self, size: tuple[int, int], items: list[InputFrame]) -> list[_Output]:
        """Pipeline thread: resize, convert, process, convert back."""
        pipeline = self._pipeline
        assert pipeline is not None
        if size != self.size:
            self._log.info("frame size %s -> %s", self.size, size)
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
            import torch  # imported by `_load_pipeline` already, unless passthrough

            batch = torch.from_numpy(np.stack(arrays))
            result = batch if pipeline.passthrough else pipeline.process(batch)
            if result.shape[0] != len(items):
                raise RuntimeError(f"pipeline returned {result.shape[0]} frames for {len(items)}")
            out = result.detach().to("cpu").numpy()
            frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24") for a in out]
        elapsed = (time.monotonic() - started) / len(items)
        outputs = []
        for item, frame in zip(items, frames, strict=True):
            self.pipeline_latency.add(elapsed)
            pts = round(item.pts * item.time_base / OUTPUT_TIME_BASE)
            outputs.append(_Output(frame, pts, item.arrival))
        return outputs

    async def _restart_pipeline(self, exc: Exception) -> bool:
        """After a pipeline exception: restart it (counted) or give up; False ends the session."""
        loop = asyncio.get_running_loop()
        self._log.warning("pipeline raised: %r", exc)
        if self.restart_count >= self.config.max_restarts:
            self._report_error(f"pipeline failed {self.restart_count + 1} times, ending the stream: {exc!r}")
            self._fail(self.last_error or "pipeline failed")
            if self._on_pipeline_failure is not None:
                self._on_pipeline_failure()
            return False
        self.restart_count += 1
        self.last_restart_time = now_ms()
        self._report_error(f"pipeline raised {exc!r}; restarting it ({self.restart_count}/{self.config.max_restarts})")
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
        size = self.size

        def _reload() -> LivePipeline:
            if old is not None:
                with contextlib.suppress(Exception):
                    old.close()
            pipeline = self._load_pipeline()
            if size is not None:
                pipeline.warm(*size)
            return pipeline

        try:
            self._pipeline = await loop.run_in_executor(self._pipe_exec, _reload)
        except Exception as reload_exc:
            self._report_error(f"pipeline failed to restart: {reload_exc!r}")
            self._fail(self.last_error or "pipeline failed")
            if self._on_pipeline_failure is not None:
                self._on_pipeline_failure()
            return False
        return True

    # --- params ---------------------------------------------------------------------------

    def set_params(self, params: LiveParams) -> None:
        """Queue a validated full param set; only the latest is applied (between batches)."""
        if self._pending_params is not None:
            self.control_coalesced += 1
        self._pending_params = params
        self._params_ready.set()

    def patch_params(self, patch: dict[str, Any]) -> LiveParams:
        """Merge `patch` into the current (or pending) params; raises `ControlError`."""
        base = self._pending_params or self.params
        params = merge_params(base, patch)
        self.set_params(params)
        return params

    async def _params_loop(self) -> None:
        """Applies the latest pending params. The pipeline's single thread runs the update
        between two batches; updates that arrive meanwhile coalesce into the latest."""
        while True:
            await self._params_ready.wait()
            self._params_ready.clear()
            await self._apply_params()

    async def _apply_params(self) -> None:
        params, self._pending_params = self._pending_params, None
        if params is None or self._pipeline is None:
            return
        pipeline = self._pipeline
        try:
            await asyncio.get_running_loop().run_in_executor(self._pipe_exec, pipeline.update_params, params)
        except Exception as exc:
            self._report_error(f"params rejected by the pipeline: {exc}")
            return
        self.params = params
        self.last_params_update_time = now_ms()
        self._params_reported = False

    async def _control(self) -> None:
        url = self.request.control_url
        while True:
            try:
                # From the oldest retained message: replaying is harmless (each one is a full
                # param set and the latest wins), and joining at the live edge could miss the
                # params sent just before we subscribed.
                async with TrickleSubscriber(url, start_seq=0, session=self._http) as sub:
                    async for segment in sub:
                        data = await segment.read()
                        self._on_control(data)
                return  # the control channel closed
            except TrickleError as exc:
                self._log.info("control channel %s: %s; retrying", url, exc)
                await asyncio.sleep(1.0)

    def _on_control(self, data: bytes) -> None:
        try:
            params = parse_control(data, self.spec.params_model)
        except ControlError as exc:
            self._report_error(f"control message rejected: {exc}")
            return
        if params is None:
            return
        self.control_messages += 1
        self.set_params(params)

    # --- egress ---------------------------------------------------------------------------

    async def _egress(self) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        if not self.request.publish_url:  # a direct session: only packet sinks
            while await outbox.get() is not Outbox.END:
                pass
            return
        failed = False
        publisher = TricklePublisher(self.request.publish_url, "video/mp2t", session=self._http)
        try:
            async with publisher:
                item = await outbox.get()
                while item is not Outbox.END:
                    if item is Outbox.CUT:
                        item = await outbox.get()
                        continue
                    if failed:
                        item = await outbox.get()
                        continue
                    try:
                        async with publisher.segment() as seg:
                            while isinstance(item, bytes):
                                await seg.write(item)
                                item = await outbox.get()
                    except TrickleClientError as exc:
                        failed = True
                        self._report_error(f"output channel failed: {exc}")
                        self._fail(self.last_error or "output failed")
                        continue
                    self.output_segments += 1
                    if self.output_segments == 1:
                        self._emit(trace_event("runner_send_first_processed_segment"), STREAM_TRACE)
        except TrickleError as exc:
            if not failed:
                self._report_error(f"output channel failed: {exc}")
                self._fail(self.last_error or "output failed")
            while item is not Outbox.END:  # keep the encoder unblocked until it ends
                item = await outbox.get()

    # --- events and status ----------------------------------------------------------------

    def _emit(self, event: dict[str, Any], queue_event_type: str = "ai_stream_events") -> None:
        self.recent_events.append(event)
        if not self.request.events_url:
            return
        if len(self._events) >= self.config.max_pending_events:
            self._events.popleft()
            self.events_dropped += 1
        self._events.append((event, queue_event_type))
        self._events_ready.set()

    def _report_error(self, message: str) -> None:
        self._log.warning("%s", message)
        self.last_error = message
        self.last_error_time = now_ms()
        self._emit(error_event(self.spec.name, message, stream_id=self.stream_id))

    async def _events_loop(self) -> None:
        url = self.request.events_url
        if not url:
            return
        publisher = TricklePublisher(url, "application/json", session=self._http)
        try:
            async with publisher:
                while True:
                    while not self._events:
                        self._events_ready.clear()
                        await self._events_ready.wait()
                    item = self._events.popleft()
                    if item is None:
                        return
                    event, kind = item
                    try:
                        async with publisher.segment() as seg:
                            await seg.write(encode_event(event, kind))
                    except TrickleClientError as exc:
                        self._log.info("events channel: %s", exc)
                        if isinstance(exc, TrickleStreamNotFoundError):
                            return
        except TrickleError as exc:
            self._log.info("events channel closed: %s", exc)

    async def _status_loop(self) -> None:
        self._emit(self.status())
        while True:
            await asyncio.sleep(self.config.status_interval)
            self._emit(self.status())

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.last_state_update_time = now_ms()

    def current_state(self) -> str:
        if self.state in (SessionState.LOADING, SessionState.OFFLINE, SessionState.ERROR):
            return self.state
        now = time.monotonic()
        last_in = self._last_input_mono
        if last_in is not None and now - last_in > self.config.degraded_input_after:
            state = SessionState.DEGRADED_INPUT
        elif self.last_error_time is not None and now_ms() - self.last_error_time < 15_000:
            state = SessionState.DEGRADED_INFERENCE
        elif self.last_restart_time is not None and now_ms() - self.last_restart_time < 60_000:
            state = SessionState.DEGRADED_INFERENCE
        else:
            state = SessionState.ONLINE
        self._set_state(state)
        return state

    def status(self, *, final: bool = False, for_api: bool = False) -> dict[str, Any]:
        """ai-runner's `PipelineStatus` fields, plus our own figures as extra fields."""
        state = self.current_state()
        params = self.params.model_dump()
        params_json = json.dumps(params, sort_keys=True, default=str)
        send_params = for_api or not self._params_reported
        if not for_api:
            self._params_reported = True
        queue = self._queue
        timestamp = now_ms()
        status: dict[str, Any] = {
            "type": "status",
            "pipeline": self.spec.name,
            "start_time": self.start_time,
            "state": state,
            "last_state_update_time": self.last_state_update_time,
            "input_status": {"last_input_time": self.last_input_time, "fps": self.input_fps.rate()},
            "inference_status": {
                "last_output_time": self.last_output_time,
                "fps": self.output_fps.rate(),
                "last_params_update_time": self.last_params_update_time,
                "last_params": params if send_params else None,
                "last_params_hash": hashlib.md5(params_json.encode()).hexdigest(),
                "last_error_time": self.last_error_time,
                "last_error": self.last_error,
                "last_restart_time": self.last_restart_time,
                "last_restart_logs": None,
                "restart_count": self.restart_count,
            },
            "last_status_timestamp": self._last_status_timestamp,
            "timestamp": timestamp,
            # Our own figures.
            "stream_id": self.stream_id,
            "request_id": self.request.gateway_request_id,
            "manifest_id": self.request.manifest_id,
            "params": params,
            "backend": str(getattr(self._pipeline, "device", "cpu")),
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "queue_depth": len(queue) if queue is not None else 0,
            "dropped_frames": queue.dropped if queue is not None else 0,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_failed": self.frames_failed,
            "input_segments": int(getattr(self.ingest, "segments", 0)),
            "output_segments": self.output_segments,
            "bad_input_segments": int(getattr(self.ingest, "bad_segments", 0)),
            "ingest": {"kind": self.ingest.name} | self.ingest.status(),
            "outputs": [_sink_status(sink) for sink in self.sinks.sinks],
            "control_messages": self.control_messages,
            "control_coalesced": self.control_coalesced,
            "pipeline_latency_ms": self.pipeline_latency.summary(),
            "e2e_latency_ms": self.e2e_latency.summary(),
            "events_dropped": self.events_dropped,
            "time_to_first_frame_ms": (
                self.first_output_time - self.start_time if self.first_output_time is not None else None
            ),
        }
        pipeline_status = getattr(self._pipeline, "status", None)
        if callable(pipeline_status):
            # Optional pipeline figures (model, warm-up, backend); read from the loop, so
            # the pipeline keeps them as plain attributes its thread overwrites.
            status["pipeline_status"] = pipeline_status()
        if final or self.finished:
            status["final"] = True
            status["end_reason"] = self.end_reason
            status["error"] = self.error
        if not for_api:
            self._last_status_timestamp = timestamp
        return status
