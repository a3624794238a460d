"""The gateway API: its route table and its OpenAPI document.

The document is ai-runner's `gen_openapi.py:translate_to_gateway` applied to the runner spec
this engine publishes (`livestream.api.openapi.build_openapi`): only the POST pipelines,
`model_id` required wherever a request schema has it, no `metadata`, and `VideoResponse` a
copy of `ImageResponse` (one mp4 URL).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from ..api import schemas as s
from ..api.openapi import build_openapi
from ..api.operations import OPERATIONS

__all__ = ["GATEWAY_ROUTES", "GatewayRoute", "ResponseKind", "build_gateway_openapi"]

#: How the gateway treats a runner's answer: `json` passes it on (checked against the schema),
#: `video` turns frames into one mp4, `llm` relays JSON or an event stream.
ResponseKind = Literal["json", "video", "llm"]

_SERVERS = [
    {"url": "https://dream-gateway.livepeer.cloud", "description": "Livepeer Cloud Community Gateway"},
    {"url": "https://livepeer.studio/api/beta/generate", "description": "Livepeer Studio Gateway"},
]
_DROPPED_SCHEMAS = ("HealthCheck", "HardwareInformation", "HardwareStats", "GPUComputeInfo",
                    "GPUUtilizationInfo", "Version")  # fmt: skip


@dataclass(frozen=True)
class GatewayRoute:
    path: str
    #: The runner pipeline (capability) the route runs: selection and metrics key on it.
    pipeline: str
    body: type[pydantic.BaseModel]
    body_kind: Literal["json", "multipart"]
    response: type[pydantic.BaseModel]
    kind: ResponseKind
    #: The body field naming the model (`model` for the LLM routes).
    model_field: str = "model_id"
    #: Whether the gateway spec requires the model field.
    model_required: bool = True


def _routes() -> tuple[GatewayRoute, ...]:
    out: list[GatewayRoute] = []
    for op in OPERATIONS:
        if op.method != "POST" or op.body is None or op.body_kind is None or op.task is None:
            continue
        kind: ResponseKind = "video" if op.task == "image-to-video" else "llm" if op.task == "llm" else "json"
        llm = op.task == "llm"
        out.append(
            GatewayRoute(
                path=op.path, pipeline=op.task, body=op.body, body_kind=op.body_kind, response=op.response,
                kind=kind, model_field="model" if llm else "model_id", model_required=not llm,
            )
        )  # fmt: skip
    # The OpenAI-compatible chat route: the LLM pipeline, answered in OpenAI's shapes.
    out.append(GatewayRoute("/v1/chat/completions", "llm", s.LLMRequest, "json", s.LLMResponse, "llm",
                            model_field="model", model_required=False))  # fmt: skip
    return tuple(out)


GATEWAY_ROUTES: tuple[GatewayRoute, ...] = _routes()


def _require_model_id(schema: dict[str, Any]) -> None:
    props = schema.get("properties", {})
    if "model_id" in props:
        required = schema.setdefault("required", [])
        if "model_id" not in required:
            required.append("model_id")
        props["model_id"].pop("default", None)


def build_gateway_openapi(version: str) -> dict[str, Any]:
    spec = copy.deepcopy(build_openapi(version))
    spec["paths"] = {path: item for path, item in spec["paths"].items() if "post" in item}
    schemas: dict[str, Any] = spec["components"]["schemas"]
    for name in _DROPPED_SCHEMAS:
        schemas.pop(name, None)
    for schema in schemas.values():
        _require_model_id(schema)
    audio = schemas.get("Body_genAudioToText", {})
    audio.get("properties", {}).pop("metadata", None)
    image = copy.deepcopy(schemas["ImageResponse"])
    image["title"] = "VideoResponse"
    image["description"] = "Response model for image generation."
    schemas["VideoResponse"] = image
    spec["servers"] = _SERVERS
    spec["info"] = {**spec["info"], "title": "Livepeer AI Runner"}
    return spec
