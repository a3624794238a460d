"""One live stream end to end: an ingest, a frame queue, the pipeline, one encode, the sinks.

    async with Session(request, spec, config, http, ingest=...) as session:
        await session.run()          # returns when the input ends or the session is stopped

`Session` only wires its parts, each in its own module:

    Ingest (its decode thread) ──frames──▶ FrameQueue ──▶ PipelineStage (pipeline thread)
       │ audio                                                 │ ProcessedFrame
       └──────────────────────────────▶ EncodeStage (encode thread) ──▶ SinkFanout ──▶ sinks
                                                                 trickle out, RTMP push, WHEP
    SessionParams: control channel / API ──▶ latest-wins slot ──▶ applied between batches
    EventsChannel: status every `status_interval`, errors, restarts, traces
    SessionStatus: state and figures

Inside `run()` a TaskGroup owns every task. `stop()` is graceful (the input is cut, queued
frames are encoded, the sinks drain); past `stop_timeout` everything is aborted. A failure ends
only this session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import av

from pipelines.base import LiveParams
from pipelines.live import LivePipelineSpec

from ..egress import PacketSink, SinkFanout
from ..egress.trickle import TrickleSink
from ..ingest import Ingest, IngestError, InputStalled
from ..ingest.trickle import TrickleIngest
from ..media.packets import AudioSource, EncodedPacket
from .config import SessionConfig, StartRequest
from .encode_stage import EncodeStage
from .events import STREAM_TRACE, error_event, now_ms, trace_event, warning_event
from .events_channel import EventsChannel
from .frames import FrameQueue, InputFrame, StreamEnded
from .params import SessionParams
from .pipeline_stage import PipelineFailed, PipelineStage
from .status import SessionState, SessionStatus

__all__ = ["Session", "SessionConfig", "SessionState", "StartRequest"]

log = logging.getLogger(__name__)


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
        if ingest is None:
            if not request.subscribe_url:
                raise ValueError("a session needs an ingest or a subscribe_url")
            ingest = TrickleIngest(request.subscribe_url, http, timeout=config.input_timeout)
        self.request, self.spec, self.config = request, spec, config
        self.stream_id = request.stream_id
        #: Where the frames come from (`livestream.ingest`).
        self.ingest = ingest
        self._http = http
        self._on_pipeline_failure = on_pipeline_failure
        self._log = logging.LoggerAdapter(log, {"stream_id": self.stream_id})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_requested = asyncio.Event()
        self._finished = asyncio.Event()
        self._closed = False
        self.events = EventsChannel(request.events_url, http, max_pending=config.max_pending_events)
        #: Every output (`livestream.egress`): the trickle output and any attached later.
        self.sinks = SinkFanout(self.report_error)
        self._pipeline = PipelineStage(
            spec,
            name=self.stream_id,
            max_restarts=config.max_restarts,
            report=self._report_error,
            emit=self.events.emit,
            call_timeout=config.pipeline_call_timeout,
            load_timeout=config.pipeline_load_timeout,
        )
        self._encode = EncodeStage(config.encoder, self.sinks, name=self.stream_id, max_frames=config.max_queue_frames)
        initial = request.params if request.params is not None else spec.params_model()
        self._params = SessionParams(initial, spec.params_model, apply=self._apply_params, report=self._report_error)
        self._warned: set[tuple[str, str]] = set()
        self._queue: FrameQueue | None = None
        self.figures = SessionStatus(
            request, spec, config, ingest, self._pipeline, self._encode, self._params, self.sinks, lambda: self.events.dropped
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._encode.start()
        self._queue = self.figures.queue = FrameQueue(
            loop, max_frames=self.config.max_queue_frames, max_lag=self.config.max_queue_lag, direct=self._direct
        )
        if self.request.publish_url:
            trickle = TrickleSink(
                self.request.publish_url, self._http, on_first_bytes=self._first_output, on_failure=self._output_failed
            )
            self.figures.trickle = trickle
            self.sinks.attach(trickle)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the sinks, threads and the pipeline. Idempotent; `run()` must have returned."""
        if self._closed:
            return
        self._closed = True
        self.stop("closed")
        self.ingest.abort()
        await self.sinks.aclose(0)
        if self._queue is not None:
            self._queue.close()
        self._encode.close()
        await self._pipeline.close(self.config.stop_timeout)

    def stop(self, reason: str = "stopped") -> None:
        """Ask the session to end: input is cut, queued frames drain, the sinks finish."""
        if self.figures.end_reason is None:
            self.figures.end_reason = reason
        self._stop_requested.set()

    def _fail(self, message: str) -> None:
        """End now because of an error (no draining)."""
        self._log.warning("session failing: %s", message)
        self.figures.error = self.figures.error or message
        self.stop(message)
        self.ingest.abort()
        if self._queue is not None:
            self._queue.clear()
            self._queue.close()

    @property
    def error(self) -> str | None:
        return self.figures.error

    @property
    def frames_in(self) -> int:
        return self.figures.frames_in

    @property
    def frames_out(self) -> int:
        return self._encode.frames_out

    @property
    def params(self) -> LiveParams:
        return self._params.current

    @property
    def recent_events(self) -> list[dict[str, Any]]:
        return list(self.events.recent)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def wait_finished(self) -> None:
        """Until `run()` has ended: as long as the stream lasts, so callers bound it."""
        await self._finished.wait()

    async def run(self) -> None:
        """Run the stream until its input ends, it is stopped, or it fails."""
        figures = self.figures
        async with self.events:
            self._trace("runner_receive_stream_request")
            try:
                await self._run_media()
            except PipelineFailed as exc:
                self._report_error(str(exc))
                figures.error = figures.error or str(exc)
                if self._on_pipeline_failure is not None:
                    self._on_pipeline_failure()
            except Exception as exc:  # a bug or an unexpected failure: this session only
                self._log.exception("session failed")
                figures.error = figures.error or f"{type(exc).__name__}: {exc}"
            finally:
                figures.set_state(SessionState.ERROR if figures.error else SessionState.OFFLINE)
                if figures.end_reason is None:
                    figures.end_reason = "input ended"
                self._finished.set()
                self.events.emit(self.status(final=True))
        self._log.info("session ended: %s", figures.error or figures.end_reason)

    async def _run_media(self) -> None:
        await self._pipeline.load(self._params.current)
        self._emit_warnings()
        if self._stop_requested.is_set():
            return
        self.figures.set_state(SessionState.ONLINE)
        async with asyncio.TaskGroup() as tg:
            name = self.stream_id
            main = [
                tg.create_task(self._ingest(), name=f"live-ingest-{name}"),
                tg.create_task(self._process(), name=f"live-process-{name}"),
            ]
            aux = [
                tg.create_task(self._status_loop(), name=f"live-status-{name}"),
                tg.create_task(self._watchdog(main), name=f"live-watchdog-{name}"),
                tg.create_task(self._params.apply_loop(), name=f"live-params-{name}"),
            ]
            if self.request.control_url:
                aux.append(tg.create_task(self._params.follow_control(self.request.control_url, self._http)))
            await asyncio.wait(main)
            await self.sinks.aclose(self.config.stop_timeout)
            for task in aux:
                task.cancel()

    async def _watchdog(self, main: list[asyncio.Task[None]]) -> None:
        """Turns a stop request into a cut input, then into an abort after `stop_timeout`."""
        await self._stop_requested.wait()
        self.ingest.stop()
        await asyncio.sleep(self.config.stop_timeout)
        self._log.warning("stop took longer than %.1f s; aborting", self.config.stop_timeout)
        self.ingest.abort()
        if self._queue is not None:
            self._queue.clear()
            self._queue.close()
        for task in main:
            task.cancel()

    async def _ingest(self) -> None:
        assert self._queue is not None
        try:
            await self.ingest.run(self)
        except IngestError as exc:
            self._report_error(str(exc))
            self.figures.error = self.figures.error or str(exc)
            if isinstance(exc, InputStalled):
                self.figures.end_reason = "input stalled"
        finally:
            self._queue.close()

    async def _process(self) -> None:
        try:
            await self._process_frames()
        finally:
            await self._encode.finish(self.config.stop_timeout)

    async def _process_frames(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            try:
                batch = await queue.get_batch(self._pipeline.max_batch)
            except StreamEnded:
                break
            try:
                outputs = await self._pipeline.process(batch)
            except PipelineFailed as exc:
                self._report_error(str(exc))
                self._fail(str(exc))
                if self._on_pipeline_failure is not None:
                    self._on_pipeline_failure()
                break
            encode = self._encode
            if encode.failure is not None or encode.stuck_for() > self.config.pipeline_call_timeout:
                message = encode.failure or f"encoder stuck for {self.config.pipeline_call_timeout:g} s; ending the stream"
                self._report_error(message)
                self._fail(message)
                break
            if outputs:
                encode.submit(outputs)

    # --- FrameTarget (`livestream.ingest`): from the ingest's thread or the loop -----------

    def put_video(self, frame: av.VideoFrame, arrival: float | None = None) -> None:
        assert self._queue is not None
        if frame.pts is None or frame.time_base is None:
            return
        self.figures.frames_in += 1
        self.figures.input_fps.tick()
        self._queue.put(InputFrame(frame, frame.pts, frame.time_base, time.monotonic() if arrival is None else arrival))

    def _direct(self, item: InputFrame) -> bool:
        """Decode thread, while the queue is idle: a frame whose output needs no pipeline
        thread (pass-through, or a cheap `runs_inline` pipeline) is computed and encoded there
        and then (no loop or thread hop); False leaves it to the queue (and `_process_frames`).
        On the loop's thread (a WHIP ingest) only a pass-through frame is taken."""
        encode = self._encode
        if encode.failure is not None or encode.stuck_for() > self.config.pipeline_call_timeout:
            return False
        out = self._pipeline.process_here(item, compute=threading.get_ident() != self._loop_thread)
        if out is None:
            return False
        encode.encode_here([out])
        return True

    def put_audio(self, item: av.AudioFrame | EncodedPacket) -> None:
        self._encode.push_audio(item)

    def set_audio_source(self, source: AudioSource | None) -> None:
        """The encode stage takes whatever timed audio comes; nothing to switch."""

    def report_error(self, message: str) -> None:
        """Any thread: a non-fatal problem, as an `error` event."""
        self._call_soon(self._report_error, message)

    def on_input(self) -> None:
        self.figures.last_input_mono = time.monotonic()
        self.figures.last_input_time = now_ms()

    def trace(self, name: str) -> None:
        self._call_soon(self._trace, name)

    def _call_soon(self, fn: Callable[[str], None], arg: str) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                self._loop.call_soon_threadsafe(fn, arg)

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
        self._encode.request_keyframe()

    def _first_output(self) -> None:
        # ai-runner's meaning: the first processed bytes went out.
        self._trace("runner_send_first_processed_segment")

    def _output_failed(self, message: str) -> None:
        self._report_error(message)
        self._fail(message)

    # --- params ---------------------------------------------------------------------------

    def set_params(self, params: LiveParams) -> None:
        """Queue a validated full param set; only the latest is applied (between batches)."""
        self._params.set(params)

    def patch_params(self, patch: dict[str, Any]) -> LiveParams:
        """Merge `patch` into the current (or pending) params; raises `ControlError`."""
        return self._params.patch(patch)

    # --- events and status ----------------------------------------------------------------

    def _trace(self, name: str) -> None:
        self.events.emit(trace_event(name), STREAM_TRACE)

    def _report_error(self, message: str) -> None:
        self._log.warning("%s", message)
        self.figures.last_error = message
        self.figures.last_error_time = now_ms()
        self.events.emit(error_event(self.spec.name, message, stream_id=self.stream_id))

    async def _apply_params(self, params: LiveParams) -> None:
        await self._pipeline.update_params(params)
        self._emit_warnings()

    def _emit_warnings(self) -> None:
        """One `warning` event per new warning of the pipeline (the status lists them all)."""
        for warning in self.figures.warnings():
            key = (warning["field"], warning["message"])
            if key not in self._warned:
                self._warned.add(key)
                self._log.warning("%s: %s", *key)
                self.events.emit(warning_event(self.spec.name, *key, stream_id=self.stream_id))

    async def _status_loop(self) -> None:
        while True:
            self._emit_warnings()
            self.events.emit(self.status())
            await asyncio.sleep(self.config.status_interval)

    def status(self, *, final: bool = False, for_api: bool = False) -> dict[str, Any]:
        """ai-runner's `PipelineStatus` fields, plus our own figures as extra fields."""
        return self.figures.event(final=final or self.finished, for_api=for_api)
