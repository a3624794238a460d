"""The runner API's route table: one `Operation` per spec path, in the spec's order.

The handlers (`routes.py`) and the OpenAPI document (`openapi.py`) are both built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pydantic

from . import schemas as s

__all__ = ["OPERATIONS", "Operation"]

BodyKind = Literal["json", "multipart"]


@dataclass(frozen=True)
class Operation:
    path: str
    method: Literal["GET", "POST"]
    operation_id: str
    summary: str
    response: type[pydantic.BaseModel]
    description: str | None = None
    body: type[pydantic.BaseModel] | None = None
    body_kind: BodyKind | None = None
    #: The batch/live task the route runs (None for health, hardware, version).
    task: str | None = None
    #: The operation's `x-speakeasy-name-override` (SDK method name).
    sdk_name: str | None = None
    #: The 200 schema carries `x-speakeasy-name-override: data` (all but /llm).
    data_override: bool = True
    #: HTTPError responses the published spec lists for this path.
    spec_errors: tuple[int, ...] = (400, 401, 500)
    #: HTTPError responses we add (documented deviations: 413/415 limits, 503 not available/busy).
    extra_errors: tuple[int, ...] = (413, 415, 503)

    @property
    def secured(self) -> bool:
        return self.method == "POST"


def _gen(
    path: str,
    operation_id: str,
    summary: str,
    description: str,
    body: type[pydantic.BaseModel],
    kind: BodyKind,
    response: type[pydantic.BaseModel],
    sdk_name: str,
    *,
    spec_errors: tuple[int, ...] = (400, 401, 500),
    data_override: bool = True,
) -> Operation:
    return Operation(
        path=path,
        method="POST",
        operation_id=operation_id,
        summary=summary,
        description=description,
        body=body,
        body_kind=kind,
        response=response,
        task=path.lstrip("/"),
        sdk_name=sdk_name,
        spec_errors=spec_errors,
        data_override=data_override,
    )


OPERATIONS: tuple[Operation, ...] = (
    _gen("/text-to-image", "genTextToImage", "Text To Image", "Generate images from text prompts.",
         s.TextToImageParams, "json", s.ImageResponse, "textToImage"),
    _gen("/image-to-image", "genImageToImage", "Image To Image", "Apply image transformations to a provided image.",
         s.Body_genImageToImage, "multipart", s.ImageResponse, "imageToImage"),
    _gen("/image-to-video", "genImageToVideo", "Image To Video", "Generate a video from a provided image.",
         s.Body_genImageToVideo, "multipart", s.VideoResponse, "imageToVideo"),
    _gen("/upscale", "genUpscale", "Upscale", "Upscale an image by increasing its resolution.",
         s.Body_genUpscale, "multipart", s.ImageResponse, "upscale"),
    _gen("/audio-to-text", "genAudioToText", "Audio To Text", "Transcribe audio files to text.",
         s.Body_genAudioToText, "multipart", s.TextResponse, "audioToText", spec_errors=(400, 401, 413, 415, 500)),
    _gen("/segment-anything-2", "genSegmentAnything2", "Segment Anything 2", "Segment objects in an image.",
         s.Body_genSegmentAnything2, "multipart", s.MasksResponse, "segmentAnything2"),
    _gen("/llm", "genLLM", "LLM", "Generate text using a language model.",
         s.LLMRequest, "json", s.LLMResponse, "llm", data_override=False),
    _gen("/image-to-text", "genImageToText", "Image To Text", "Transform image files to text.",
         s.Body_genImageToText, "multipart", s.ImageToTextResponse, "imageToText", spec_errors=(400, 401, 413, 500)),
    _gen("/live-video-to-video", "genLiveVideoToVideo", "Live Video To Video",
         "Apply transformations to a live video streamed to the returned endpoints.",
         s.LiveVideoToVideoParams, "json", s.LiveVideoToVideoResponse, "liveVideoToVideo"),
    _gen("/text-to-speech", "genTextToSpeech", "Text To Speech",
         "Generate a text-to-speech audio file based on the provided text input and speaker description.",
         s.TextToSpeechParams, "json", s.AudioResponse, "textToSpeech"),
    Operation("/health", "GET", "health", "Health", s.HealthCheck, spec_errors=(), extra_errors=(), data_override=False),
    Operation("/hardware/info", "GET", "hardware_info", "Hardware Info", s.HardwareInformation,
              spec_errors=(), extra_errors=(), data_override=False),
    Operation("/hardware/stats", "GET", "hardware_stats", "Hardware Stats", s.HardwareStats,
              spec_errors=(), extra_errors=(), data_override=False),
    # GET /version follows ai-runner's runner/openapi.yaml (newer than the reference copy).
    Operation("/version", "GET", "version", "Version", s.Version, spec_errors=(), extra_errors=(), data_override=False),
)  # fmt: skip
