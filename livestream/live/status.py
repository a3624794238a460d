"""A session's state and its `status` event (ai-runner's `PipelineStatus`, plus our figures)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.live import LivePipelineSpec

from ..egress import PacketSink, SinkFanout
from ..egress.trickle import TrickleSink
from ..ingest import Ingest
from .config import SessionConfig, StartRequest
from .encode_stage import EncodeStage
from .events import now_ms
from .frames import FrameQueue
from .params import SessionParams
from .pipeline_stage import PipelineStage
from .stats import RateMeter

__all__ = ["SessionState", "SessionStatus"]


class SessionState:
    """ai-runner's pipeline states (`live/process/status.py`)."""

    LOADING = "LOADING"
    ONLINE = "ONLINE"
    DEGRADED_INPUT = "DEGRADED_INPUT"
    DEGRADED_INFERENCE = "DEGRADED_INFERENCE"
    OFFLINE = "OFFLINE"
    ERROR = "ERROR"


def _sink_status(sink: PacketSink) -> dict[str, Any]:
    status = getattr(sink, "status", None)
    base: dict[str, Any] = {"name": sink.name, "dropped": getattr(sink, "dropped", 0)}
    return base | (status() if callable(status) else {})


@dataclass
class SessionStatus:
    """What the session knows about itself; `event()` renders it. Figures are written by the
    session's parts (input ones from the ingest's thread: plain assignments)."""

    request: StartRequest
    spec: LivePipelineSpec
    config: SessionConfig
    ingest: Ingest
    pipeline: PipelineStage
    encode: EncodeStage
    params: SessionParams
    sinks: SinkFanout
    events_dropped: Callable[[], int]
    queue: FrameQueue | None = None
    #: The runner contract's output, when the request has a `publish_url`.
    trickle: TrickleSink | None = None
    start_time: int = field(default_factory=now_ms)
    state: str = SessionState.LOADING
    last_state_update_time: int = field(default_factory=now_ms)
    end_reason: str | None = None
    error: str | None = None
    frames_in: int = 0
    input_fps: RateMeter = field(default_factory=RateMeter)
    last_input_time: int | None = None
    last_input_mono: float | None = None
    last_error_time: int | None = None
    last_error: str | None = None
    _last_status_timestamp: int | None = None
    _started_mono: float = field(default_factory=time.monotonic)
    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.last_state_update_time = now_ms()

    def current_state(self) -> str:
        if self.state in (SessionState.LOADING, SessionState.OFFLINE, SessionState.ERROR):
            return self.state
        now = time.monotonic()
        restart = self.pipeline.last_restart_time
        if self.last_input_mono is not None and now - self.last_input_mono > self.config.degraded_input_after:
            state = SessionState.DEGRADED_INPUT
        elif self.last_error_time is not None and now_ms() - self.last_error_time < 15_000:
            state = SessionState.DEGRADED_INFERENCE
        elif restart is not None and now_ms() - restart < 60_000:
            state = SessionState.DEGRADED_INFERENCE
        else:
            state = SessionState.ONLINE
        self.set_state(state)
        return state

    def warnings(self) -> list[dict[str, str]]:
        """The pipeline's current warnings (`{"field", "message"}`), if it reports any."""
        pipeline_status = self.pipeline.pipeline_status()
        return list((pipeline_status or {}).get("warnings") or [])

    def event(self, *, final: bool = False, for_api: bool = False) -> dict[str, Any]:
        """The `status` event; `for_api` renders it for the HTTP API (params always included,
        nothing marked as reported)."""
        state = self.current_state()
        pipeline, encode, params = self.pipeline, self.encode, self.params
        current = params.current.model_dump()
        params_json = json.dumps(current, sort_keys=True, default=str)
        send_params = for_api or not params.reported
        if not for_api:
            params.reported = True
        queue = self.queue
        timestamp = now_ms()
        last_output = int(encode.last_output_time * 1000) if encode.last_output_time is not None else None
        first_output = encode.first_output
        size = pipeline.size
        status: dict[str, Any] = {
            "type": "status",
            "pipeline": self.spec.name,
            "start_time": self.start_time,
            "state": state,
            "last_state_update_time": self.last_state_update_time,
            "input_status": {"last_input_time": self.last_input_time, "fps": self.input_fps.rate()},
            "inference_status": {
                "last_output_time": last_output,
                "fps": encode.fps.rate(),
                "last_params_update_time": params.last_update_time,
                "last_params": current if send_params else None,
                "last_params_hash": hashlib.md5(params_json.encode()).hexdigest(),
                "last_error_time": self.last_error_time,
                "last_error": self.last_error,
                "last_restart_time": pipeline.last_restart_time,
                "last_restart_logs": None,
                "restart_count": pipeline.restart_count,
            },
            "last_status_timestamp": self._last_status_timestamp,
            "timestamp": timestamp,
            # Our own figures.
            "stream_id": self.request.stream_id,
            "request_id": self.request.gateway_request_id,
            "manifest_id": self.request.manifest_id,
            "params": current,
            "backend": pipeline.device,
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "queue_depth": len(queue) if queue is not None else 0,
            "dropped_frames": (queue.dropped if queue is not None else 0) + encode.frames_dropped,
            "frames_in": self.frames_in,
            "frames_out": encode.frames_out,
            "frames_failed": pipeline.frames_failed,
            "audio_dropped": encode.audio_dropped,
            "input_segments": int(getattr(self.ingest, "segments", 0)),
            "output_segments": self.trickle.segments if self.trickle is not None else 0,
            "bad_input_segments": int(getattr(self.ingest, "bad_segments", 0)),
            "ingest": {"kind": self.ingest.name} | self.ingest.status(),
            "outputs": [_sink_status(sink) for sink in self.sinks.sinks],
            "control_messages": params.control_messages,
            "control_coalesced": params.coalesced,
            "pipeline_latency_ms": pipeline.latency.summary(),
            "e2e_latency_ms": encode.latency.summary(),
            "events_dropped": self.events_dropped(),
            "time_to_first_frame_ms": (
                round(first_output * 1000 - self._started_mono * 1000) if first_output is not None else None
            ),
        }
        pipeline_status = pipeline.pipeline_status()
        if pipeline_status is not None:
            status["pipeline_status"] = pipeline_status
        # What the params run without, and why: [{"field", "message"}] (pipelines that say).
        status["warnings"] = list((pipeline_status or {}).get("warnings") or [])
        # While the pipeline loads: {"stage", "progress" (0..1, or None when unknown), "elapsed_s"}.
        status["loading"] = pipeline.progress.snapshot() if state == SessionState.LOADING else None
        if final:
            status["final"] = True
            status["end_reason"] = self.end_reason
            status["error"] = self.error
        if not for_api:
            self._last_status_timestamp = timestamp
        return status
