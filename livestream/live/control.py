"""Control messages: one JSON object per trickle segment, read whole, validated, coalesced.

As ai-runner interprets them: `{"keep":"alive"}` (go-livepeer's keepalive) is ignored, and any
other object is a full parameter set for the pipeline (omitted fields take their defaults),
not a patch. `POST /live/{stream}/params` is the patch form (merged into the current params).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pydantic

from pipelines.base import LiveParams

__all__ = ["KEEPALIVE", "MAX_CONTROL_BYTES", "ControlError", "merge_params", "parse_control", "validate_params"]

KEEPALIVE = {"keep": "alive"}
#: A control segment larger than this is rejected (ComfyUI workflows fit easily).
MAX_CONTROL_BYTES = 4 * 1024 * 1024


class ControlError(ValueError):
    """A control message or params patch was rejected; the stream keeps its last good params."""


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "params"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def validate_params(model: type[LiveParams], values: Mapping[str, Any]) -> LiveParams:
    try:
        return model.model_validate(dict(values))
    except pydantic.ValidationError as exc:
        raise ControlError(f"invalid params: {_describe(exc)}") from None


def parse_control(data: bytes, model: type[LiveParams]) -> LiveParams | None:
    """The params a control segment carries, or None for a keepalive (or an empty segment)."""
    if len(data) > MAX_CONTROL_BYTES:
        raise ControlError(f"control message of {len(data)} bytes exceeds {MAX_CONTROL_BYTES}")
    if not data.strip():
        return None
    try:
        message = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError(f"control message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ControlError(f"control message must be a JSON object, got {type(message).__name__}")
    if message == KEEPALIVE:
        return None
    return validate_params(model, message)


def merge_params(current: LiveParams, patch: Mapping[str, Any]) -> LiveParams:
    """`current` with the fields of `patch` replaced, validated as a whole."""
    merged = current.model_dump()
    merged.update(patch)
    return validate_params(type(current), merged)
