"""Event messages for the events channel, in ai-runner's shapes.

Every message is `{"event": {...}, "queue_event_type": ...}`; the gateway re-queues `status`
events and treats any event as a heartbeat. Times follow ai-runner: milliseconds since the
epoch, except the `time` of an `error` event (seconds, float).
"""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = ["STREAM_EVENTS", "STREAM_TRACE", "encode_event", "error_event", "now_ms", "trace_event", "warning_event"]

STREAM_EVENTS = "ai_stream_events"
STREAM_TRACE = "stream_trace"


def now_ms() -> int:
    return int(time.time() * 1000)


def error_event(pipeline: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "pipeline": pipeline, "message": message, "time": time.time(), **extra}


def warning_event(pipeline: str, field: str, message: str, **extra: Any) -> dict[str, Any]:
    """Something the pipeline runs without (a param it cannot honour yet): not an error."""
    return {"type": "warning", "pipeline": pipeline, "field": field, "message": message, "time": time.time(), **extra}


def trace_event(name: str) -> dict[str, Any]:
    return {"type": name, "timestamp": now_ms()}


def encode_event(event: dict[str, Any], queue_event_type: str = STREAM_EVENTS) -> bytes:
    """One events-channel segment. The streamer's `timestamp` (ms) is added when missing."""
    body = dict(event)
    body.setdefault("timestamp", now_ms())
    return json.dumps({"event": body, "queue_event_type": queue_event_type}, default=str).encode()
