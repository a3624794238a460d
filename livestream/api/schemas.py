"""Pydantic models for every schema of the runner OpenAPI ("Livepeer AI Runner"), field for field.

Sources, in order of precedence:

- `shared/reference/livepeer-ai-network.txt` (the published runner spec): every schema up to
  and including `LLMResponse`.
- ai-runner's current `runner/openapi.yaml` (v0.14.1, `50a742c`), where the reference copy is
  cut short or older: `LLMTokenUsage`, `LiveVideoToVideoParams`, `LiveVideoToVideoResponse`,
  `MasksResponse`, `Media`, `MediaURL`, `TextResponse`, `TextToImageParams`,
  `TextToSpeechParams`, `ValidationError`, `VideoResponse`, `Version` (newer route) and the
  `LOADING` state of `HealthCheck`. Each is marked below.

Optional fields without a default (`seed`, the SAM2 prompts, `LLMChoice.delta`) accept null
but are published without `null`, as ai-runner publishes them (its Go codegen needs that).
Multipart bodies (`Body_gen*`) carry their uploads as `UploadedFile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ..keys import HealthStatus

__all__ = [
    "APIError",
    "AudioResponse",
    "Body_genAudioToText",
    "Body_genImageToImage",
    "Body_genImageToText",
    "Body_genImageToVideo",
    "Body_genSegmentAnything2",
    "Body_genUpscale",
    "Chunk",
    "GPUComputeInfo",
    "GPUUtilizationInfo",
    "HTTPError",
    "HTTPValidationError",
    "HardwareInformation",
    "HardwareStats",
    "HealthCheck",
    "HealthStatus",
    "ImageResponse",
    "ImageToTextResponse",
    "LLMChoice",
    "LLMMessage",
    "LLMRequest",
    "LLMResponse",
    "LLMTokenUsage",
    "LiveVideoToVideoParams",
    "LiveVideoToVideoResponse",
    "MasksResponse",
    "Media",
    "MediaURL",
    "TextResponse",
    "TextToImageParams",
    "TextToSpeechParams",
    "UploadedFile",
    "ValidationError",
    "Version",
    "VideoResponse",
]


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file part of a multipart body (FastAPI's `UploadFile`, already read into memory)."""

    filename: str
    content_type: str
    data: bytes

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "binary"}

    @classmethod
    def _validate(cls, value: Any) -> UploadedFile:
        if isinstance(value, cls):
            return value
        # FastAPI's wording for a form field where a file was expected.
        raise ValueError(f"Expected UploadFile, received: {type(value)}")


_SAFETY_CHECK = "Perform a safety check to estimate if generated images could be offensive or harmful."
_SEED = "Seed for random number generation."
_STEPS = (
    "Number of denoising steps. More steps usually lead to higher quality images but slower inference. "
    "Modulated by strength."
)
_LORAS = (
    "A LoRA (Low-Rank Adaptation) model and its corresponding weight for image generation. Example: "
    '{ "latent-consistency/lcm-lora-sdxl": 1.0, "nerijs/pixel-art-xl": 1.2}.'
)
_GUIDANCE = "Encourages model to generate images closely linked to the text prompt (higher values may reduce image quality)."
_NEGATIVE = "Text prompt(s) to guide what to exclude from image generation. Ignored if guidance_scale < 1."


# --- errors ---------------------------------------------------------------------------------


class APIError(BaseModel):
    """API error response model."""

    msg: str = Field(description="The error message.")


class HTTPError(BaseModel):
    """HTTP error response model."""

    detail: APIError = Field(description="Detailed error information.")


class ValidationError(BaseModel):
    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    loc: list[str | int] = Field(title="Location")
    msg: str = Field(title="Message")
    type: str = Field(title="Error Type")


class HTTPValidationError(BaseModel):
    detail: list[ValidationError] | None = Field(default=None, title="Detail")


# --- media responses ------------------------------------------------------------------------


class MediaURL(BaseModel):
    """A URL from which media can be accessed."""

    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    url: str = Field(description="The URL where the media can be accessed.")


class Media(BaseModel):
    """A media object containing information about the generated media."""

    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    url: str = Field(description="The URL where the media can be accessed.")
    seed: int = Field(description="The seed used to generate the media.")
    nsfw: bool = Field(description="Whether the media was flagged as NSFW.")


class ImageResponse(BaseModel):
    """Response model for image generation."""

    images: list[Media] = Field(description="The generated images.")


class VideoResponse(BaseModel):
    """Response model for video generation."""

    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    frames: list[list[Media]] = Field(description="The generated video frames.")


class AudioResponse(BaseModel):
    """Response model for audio generation."""

    audio: MediaURL = Field(description="The generated audio.")


class MasksResponse(BaseModel):
    """Response model for object segmentation."""

    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    masks: str = Field(description="The generated masks.")
    scores: str = Field(description="The model's confidence scores for each generated mask.")
    logits: str = Field(description="The raw, unnormalized predictions (logits) for the masks.")


class Chunk(BaseModel):
    """A chunk of text with a timestamp."""

    timestamp: list[Any] = Field(description="The timestamp of the chunk.")
    text: str = Field(description="The text of the chunk.")


class TextResponse(BaseModel):
    """Response model for text generation."""

    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    text: str = Field(description="The generated text.")
    chunks: list[Chunk] = Field(description="The generated text chunks.")


class ImageToTextResponse(BaseModel):
    """Response model for text generation."""

    text: str = Field(description="The generated text.")


# --- LLM ------------------------------------------------------------------------------------


class LLMMessage(BaseModel):
    role: str
    content: str


class LLMChoice(BaseModel):
    index: int
    finish_reason: str = ""
    delta: LLMMessage | None = None
    message: LLMMessage | None = None


class LLMTokenUsage(BaseModel):
    # Follows ai-runner's runner/openapi.yaml (the reference copy is cut from here on).
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class LLMResponse(BaseModel):
    id: str
    model: str
    created: int
    usage: LLMTokenUsage
    choices: list[LLMChoice]


class LLMRequest(BaseModel):
    messages: list[LLMMessage]
    model: str = ""
    temperature: float = 0.7
    max_tokens: int = 256
    top_p: float = 1.0
    top_k: int = -1
    stream: bool = False


# --- live -----------------------------------------------------------------------------------


class LiveVideoToVideoParams(BaseModel):
    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    subscribe_url: str = Field(description="Source URL of the incoming stream to subscribe to.")
    publish_url: str = Field(description="Destination URL of the outgoing stream to publish.")
    control_url: str = Field(
        default="",
        description="URL for subscribing via Trickle protocol for updates in the live video-to-video generation params.",
    )
    events_url: str = Field(
        default="", description="URL for publishing events via Trickle protocol for pipeline status and logs."
    )
    model_id: str = Field(
        default="",
        description=(
            "Name of the pipeline to run in the live video to video job. Notice that this is named model_id for "
            "consistency with other routes, but it does not refer to a Hugging Face model ID. The exact model(s) "
            "depends on the pipeline implementation and might be configurable via the `params` argument."
        ),
    )
    params: dict[str, Any] = Field(default={}, description="Initial parameters for the pipeline.")
    gateway_request_id: str = Field(default="", description="The ID of the Gateway request (for logging purposes).")
    manifest_id: str = Field(default="", description="The manifest ID from the orchestrator (for logging purposes).")
    stream_id: str = Field(default="", description="The Stream ID (for logging purposes).")


class LiveVideoToVideoResponse(BaseModel):
    """Response model for live video-to-video generation."""

    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    subscribe_url: str = Field(description="Source URL of the incoming stream to subscribe to")
    publish_url: str = Field(description="Destination URL of the outgoing stream to publish to")
    control_url: str = Field(default="", description="URL for updating the live video-to-video generation")
    events_url: str = Field(default="", description="URL for subscribing to events for pipeline status and logs")
    request_id: str = Field(default="", description="The ID generated for this request")
    manifest_id: str = Field(default="", description="Orchestrator manifest ID for this request")


# --- JSON request bodies --------------------------------------------------------------------


class TextToImageParams(BaseModel):
    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    model_id: str = Field(default="", description="Hugging Face model ID used for image generation.")
    loras: str = Field(default="", description=_LORAS)
    prompt: str = Field(
        description="Text prompt(s) to guide image generation. Separate multiple prompts with '|' if supported by the model."
    )
    height: int = Field(default=576, description="The height in pixels of the generated image.")
    width: int = Field(default=1024, description="The width in pixels of the generated image.")
    guidance_scale: float = Field(default=7.5, description=_GUIDANCE)
    negative_prompt: str = Field(default="", description=_NEGATIVE)
    safety_check: bool = Field(default=True, description=_SAFETY_CHECK)
    seed: int | None = Field(default=None, description=_SEED)
    num_inference_steps: int = Field(default=50, description=_STEPS)
    num_images_per_prompt: int = Field(default=1, description="Number of images to generate per prompt.")


class TextToSpeechParams(BaseModel):
    # Follows ai-runner's runner/openapi.yaml (cut from the reference copy).
    model_id: str = Field(default="", description="Hugging Face model ID used for text to speech generation.")
    text: str = Field(default="", description="Text input for speech generation.")
    description: str = Field(
        default="A male speaker delivers a slightly expressive and animated speech with a moderate speed and pitch.",
        description="Description of speaker to steer text to speech generation.",
    )


# --- multipart request bodies ---------------------------------------------------------------


class Body_genAudioToText(BaseModel):  # noqa: N801 - the spec's schema name
    audio: UploadedFile = Field(description="Uploaded audio file to be transcribed.")
    model_id: str = Field(default="", description="Hugging Face model ID used for transcription.")
    return_timestamps: str = Field(
        default="true",
        description=(
            "Return timestamps for the transcribed text. Supported values: 'sentence', 'word', or a string boolean "
            "('true' or 'false'). Default is 'true' ('sentence'). 'false' means no timestamps. 'word' means "
            "word-based timestamps."
        ),
    )
    metadata: str = Field(default="{}", description="Additional job information to be passed to the pipeline.")


class Body_genImageToImage(BaseModel):  # noqa: N801
    prompt: str = Field(description="Text prompt(s) to guide image generation.")
    image: UploadedFile = Field(description="Uploaded image to modify with the pipeline.")
    model_id: str = Field(default="", description="Hugging Face model ID used for image generation.")
    loras: str = Field(default="", description=_LORAS)
    strength: float = Field(default=0.8, description="Degree of transformation applied to the reference image (0 to 1).")
    guidance_scale: float = Field(default=7.5, description=_GUIDANCE)
    image_guidance_scale: float = Field(
        default=1.5, description="Degree to which the generated image is pushed towards the initial image."
    )
    negative_prompt: str = Field(default="", description=_NEGATIVE)
    safety_check: bool = Field(default=True, description=_SAFETY_CHECK)
    seed: int | None = Field(default=None, description=_SEED)
    num_inference_steps: int = Field(default=100, description=_STEPS)
    num_images_per_prompt: int = Field(default=1, description="Number of images to generate per prompt.")


class Body_genImageToText(BaseModel):  # noqa: N801
    image: UploadedFile = Field(description="Uploaded image to transform with the pipeline.")
    prompt: str = Field(default="", description="Text prompt(s) to guide transformation.")
    model_id: str = Field(default="", description="Hugging Face model ID used for transformation.")


class Body_genImageToVideo(BaseModel):  # noqa: N801
    image: UploadedFile = Field(description="Uploaded image to generate a video from.")
    model_id: str = Field(default="", description="Hugging Face model ID used for video generation.")
    height: int = Field(default=576, description="The height in pixels of the generated video.")
    width: int = Field(default=1024, description="The width in pixels of the generated video.")
    fps: int = Field(default=6, description="The frames per second of the generated video.")
    motion_bucket_id: int = Field(
        default=127,
        description=(
            "Used for conditioning the amount of motion for the generation. The higher the number the more motion "
            "will be in the video."
        ),
    )
    noise_aug_strength: float = Field(
        default=0.02,
        description=(
            "Amount of noise added to the conditioning image. Higher values reduce resemblance to the conditioning "
            "image and increase motion."
        ),
    )
    safety_check: bool = Field(default=True, description=_SAFETY_CHECK)
    seed: int | None = Field(default=None, description=_SEED)
    num_inference_steps: int = Field(default=25, description=_STEPS)


class Body_genSegmentAnything2(BaseModel):  # noqa: N801
    image: UploadedFile = Field(description="Image to segment.")
    model_id: str = Field(default="", description="Hugging Face model ID used for image generation.")
    point_coords: str | None = Field(
        default=None, description="Nx2 array of point prompts to the model, where each point is in (X,Y) in pixels."
    )
    point_labels: str | None = Field(
        default=None,
        description=(
            "Labels for the point prompts, where 1 indicates a foreground point and 0 indicates a background point."
        ),
    )
    box: str | None = Field(
        default=None, description="A length 4 array given as a box prompt to the model, in XYXY format."
    )
    mask_input: str | None = Field(
        default=None,
        description=(
            "A low-resolution mask input to the model, typically from a previous prediction iteration, with the "
            "form 1xHxW (H=W=256 for SAM)."
        ),
    )
    multimask_output: bool = Field(
        default=True,
        description=(
            "If true, the model will return three masks for ambiguous input prompts, often producing better masks "
            "than a single prediction."
        ),
    )
    return_logits: bool = Field(
        default=True, description="If true, returns un-thresholded mask logits instead of a binary mask."
    )
    normalize_coords: bool = Field(
        default=True,
        description=(
            "If true, the point coordinates will be normalized to the range [0,1], with point_coords expected to be "
            "with respect to image dimensions."
        ),
    )


class Body_genUpscale(BaseModel):  # noqa: N801
    prompt: str = Field(description="Text prompt(s) to guide upscaled image generation.")
    image: UploadedFile = Field(description="Uploaded image to modify with the pipeline.")
    model_id: str = Field(default="", description="Hugging Face model ID used for upscaled image generation.")
    safety_check: bool = Field(default=True, description=_SAFETY_CHECK)
    seed: int | None = Field(default=None, description=_SEED)
    num_inference_steps: int = Field(default=75, description=_STEPS)


# --- health, hardware, version --------------------------------------------------------------

class HealthCheck(BaseModel):
    status: HealthStatus = Field(description="The health status of the pipeline")


class GPUComputeInfo(BaseModel):
    """Model for detailed GPU compute information."""

    id: str
    name: str
    memory_total: int
    memory_free: int
    major: int
    minor: int


class GPUUtilizationInfo(BaseModel):
    """Model for GPU utilization statistics."""

    id: str
    name: str
    memory_total: int
    memory_free: int
    utilization_compute: int
    utilization_memory: int


class HardwareInformation(BaseModel):
    """Response model for GPU information."""

    pipeline: str
    model_id: str
    gpu_info: dict[int, GPUComputeInfo]


class HardwareStats(BaseModel):
    """Response model for real-time GPU statistics."""

    pipeline: str
    model_id: str
    gpu_stats: dict[int, GPUUtilizationInfo]


class Version(BaseModel):
    # Follows ai-runner's runner/openapi.yaml (`GET /version`, newer than the reference copy).
    pipeline: str
    model_id: str
    version: str = Field(description="The version of the Runner")

