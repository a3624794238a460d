"""What a live session is started with: the request (ai-runner's fields) and its timers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pipelines.base import LiveParams

from ..media.video_encoder import EncoderConfig

__all__ = ["SessionConfig", "StartRequest"]


@dataclass(frozen=True)
class SessionConfig:
    """Timers and bounds of live sessions (tests shorten them)."""

    #: Seconds between `status` events (ai-runner: 10).
    status_interval: float = 10.0
    #: Seconds without input bytes before the session ends (ai-runner: 60).
    input_timeout: float = 60.0
    max_queue_frames: int = 64
    #: Seconds of stream time the frame queue holds before dropping its oldest frames.
    max_queue_lag: float = 1.0
    #: Pipeline restarts after exceptions before the session ends.
    max_restarts: int = 2
    #: Seconds one batch may spend in the pipeline before the call counts as stuck: the
    #: session reports it and ends (`PipelineStage`).
    pipeline_call_timeout: float = 60.0
    #: The same for a load, a restart, a params update or a new frame size's warm-up (which
    #: may compile).
    pipeline_load_timeout: float = 900.0
    #: Seconds a graceful stop may take before everything is aborted.
    stop_timeout: float = 5.0
    #: Seconds without input after which the state is DEGRADED_INPUT.
    degraded_input_after: float = 2.0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    max_pending_events: int = 64


@dataclass(frozen=True)
class StartRequest:
    """What `POST /live-video-to-video` carries (ai-runner's fields), params validated."""

    stream_id: str
    subscribe_url: str
    publish_url: str
    control_url: str = ""
    events_url: str = ""
    params: LiveParams | None = None
    gateway_request_id: str = ""
    manifest_id: str = ""

    @staticmethod
    def session_id(stream_id: str, gateway_request_id: str) -> str:
        return stream_id or gateway_request_id or uuid.uuid4().hex
