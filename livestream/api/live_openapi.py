"""The live session API's OpenAPI document (`GET /live/openapi.json`).

ai-runner publishes no live session API (its `/live-video-to-video` start is in the runner
spec, `livestream.api.openapi`); ours (`live_sessions`, `recordings`) gets a document of its
own, so clients can be generated from it and the fuzz tests drive it as they drive the runner
routes. Bodies and answers are pydantic models here; a status is ai-runner's `PipelineStatus`
event with our extra fields, declared by the fields every status has.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from .schemas import HTTPError

__all__ = ["build_live_openapi"]

_REF = "#/components/schemas/{model}"


class LiveSessionSummary(BaseModel):
    stream_id: str
    pipeline: str
    state: str
    start_time: int | None
    width: int | None
    height: int | None
    frames_in: int
    frames_out: int
    input_fps: float
    output_fps: float
    ingest: str | None
    outputs: list[str]


class LiveSessionList(BaseModel):
    sessions: list[LiveSessionSummary]


class LivePipelineInfo(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any] = Field(description="JSON schema of the pipeline's params.")


class LivePipelineList(BaseModel):
    pipelines: list[LivePipelineInfo]


class LiveStatus(BaseModel):
    """A stream's status (the `status` event of ai-runner's live protocol, plus our figures)."""

    model_config = ConfigDict(extra="allow")

    type: str
    pipeline: str
    state: str
    start_time: int | None
    input_status: dict[str, Any]
    inference_status: dict[str, Any]


class DirectStreamConfig(BaseModel):
    """`POST /live/{stream}`: a direct (RTMP/WHIP) stream's params and where to push its output."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] | None = Field(default=None, description="Params of the live pipeline (merged).")
    rtmp_output: str | None = Field(default=None, description='An rtmp:// URL to push the output to; "" stops pushing.')


class DirectStreamState(BaseModel):
    stream_id: str
    live: bool
    pipeline: str
    params: dict[str, Any]
    rtmp_output: str | None


class ParamsPatchResult(BaseModel):
    stream_id: str
    params: dict[str, Any]


class RecordingInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str = Field(description="Absolute path of the MP4 file on the engine.")
    url: str = Field(description="Absolute URL the file downloads from.")
    bytes: int
    started: float | str | None
    ended: float | str | None


#: (method, path, operation id, summary, body model, 2xx status, answer model or media type)
_OPERATIONS: tuple[tuple[str, str, str, str, type[BaseModel] | None, int, type[BaseModel] | str], ...] = (
    ("get", "/live", "listLiveSessions", "Running live sessions", None, 200, LiveSessionList),
    ("get", "/live/pipelines", "listLivePipelines", "Live pipelines and their params schemas", None, 200, LivePipelineList),
    ("get", "/live/{stream}/status", "getLiveStatus", "A stream's status (also shortly after it ended)", None, 200, LiveStatus),
    ("post", "/live/{stream}", "configureLiveStream", "Params and RTMP output of a direct stream", DirectStreamConfig, 200, DirectStreamState),
    ("delete", "/live/{stream}", "stopLiveStream", "Stop a stream; its final status", None, 200, LiveStatus),
    ("post", "/live/{stream}/params", "patchLiveParams", "Merge params into a running stream's", None, 200, ParamsPatchResult),
    ("post", "/live/{stream}/record", "startRecording", "Start recording a running stream", None, 201, RecordingInfo),
    ("delete", "/live/{stream}/record", "stopRecording", "Stop recording; the finished recording", None, 200, RecordingInfo),
    ("get", "/live/{stream}/recordings", "listRecordings", "A stream's recordings", None, 200, "recordings"),
    ("get", "/live/{stream}/recordings/{name}", "getRecording", "One recording's MP4 file", None, 200, "video/mp4"),
)  # fmt: skip

_ERRORS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict", 503: "Service Unavailable"}


def _error(reason: str) -> dict[str, Any]:
    return {"description": reason, "content": {"application/json": {"schema": {"$ref": _REF.format(model="HTTPError")}}}}


def _json(schema: dict[str, Any], description: str = "Successful Response") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _answer(status: int, answer: type[BaseModel] | str) -> dict[str, Any]:
    if answer == "video/mp4":
        return {"description": "The MP4 file", "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}}
    if answer == "recordings":
        return _json({"type": "array", "items": {"$ref": _REF.format(model="RecordingInfo")}})
    assert not isinstance(answer, str)
    return _json({"$ref": _REF.format(model=answer.__name__)})


def build_live_openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the live session API."""
    models: list[type[pydantic.BaseModel]] = [HTTPError, RecordingInfo]
    models += [m for op in _OPERATIONS for m in (op[4], op[6]) if isinstance(m, type)]
    _, defs = models_json_schema([(m, "validation") for m in dict.fromkeys(models)], ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation_id, summary, body, status, answer in _OPERATIONS:
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": operation_id,
            "tags": ["live"],
            "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}} for n in names],
            "responses": {str(status): _answer(status, answer)} | {str(code): _error(r) for code, r in _ERRORS.items()},
            "security": [{"HTTPBearer": []}],
        }
        if body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model=body.__name__)}}},
            }
        elif path.endswith("/params"):
            schema = {"type": "object", "description": "Params to merge (the pipeline's params schema)."}
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "livestream live session API", "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
    }
