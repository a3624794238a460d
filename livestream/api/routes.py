"""Handlers of the runner API routes, registered from the route table in `operations.py`.

Every POST route: bearer auth (when a token is configured) -> body parsing and validation
(415/413/422) -> route checks as ai-runner makes them -> `model_id` check -> the pipeline
registry, which runs the model in a worker thread (or answers 503 for tasks without a
pipeline yet).

Ordering note: ai-runner (FastAPI) validates the body before its handler checks the token, so
there an unauthenticated invalid request gets 422; we check the token first, so an
unauthenticated client gets 401 and never has its upload read.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pydantic
from aiohttp import hdrs, web

from pipelines.errors import InvalidRequestError, ModelMismatchError

from ..errors import SessionLimitError
from ..keys import REGISTRY_KEY
from ..live import LIVE_MANAGER_KEY
from ..live.client_limits import CLIENT_SESSIONS_KEY
from ..settings import Settings, WorkLimits
from . import schemas as s
from .bodies import BodyLimits, read_json_body, read_multipart_body
from .errors import ApiError
from .hardware import HardwareInfo
from .health import LIVE_TASK, health_status
from .media import ImageTooLargeError, image_response, model_response, open_image
from .operations import OPERATIONS, Operation

__all__ = ["RunnerApi"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_UNAUTHORIZED_HEADERS: dict[str, str] = {hdrs.WWW_AUTHENTICATE: "Bearer"}
_AUDIO_FORMAT_ERROR = "Unsupported audio format or malformed file."
#: Seconds between checks that a batch request's client is still connected.
DISCONNECT_POLL_S = 0.25
_HEALTH_BODIES = {status: json.dumps({"status": status}).encode() for status in ("LOADING", "OK", "ERROR", "IDLE")}


def _parse_return_timestamps(value: str) -> bool | str:
    """ai-runner's `parse_return_timestamps`: 'sentence' is the model default (True)."""
    lowered = value.lower()
    if lowered in ("true", "1", "sentence"):
        return True
    if lowered in ("false", "0"):
        return False
    return lowered


def _probe_audio(data: bytes) -> float | None:
    """Duration in seconds of an audio upload; `ValueError` when it holds no decodable audio."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            if container.duration is not None:
                return container.duration / av.time_base
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return None
    except ValueError:
        raise
    except Exception as exc:  # av.FFmpegError and whatever else PyAV raises on bytes it cannot parse
        raise ValueError(str(exc)) from None


def _check_limit(value: float, limit: float, what: str, name: str, status: int = 400) -> None:
    if value > limit:
        raise ApiError(status, f"{what} is {value:g}, over this server's limit of {limit:g} (--limit {name}=N).")


def _check_positive(value: int, what: str) -> None:
    if value < 1:
        raise ApiError(400, f"{what} must be at least 1, got {value}.")


def _check_size(width: int, height: int, limits: WorkLimits) -> None:
    _check_positive(width, "width")
    _check_positive(height, "height")
    _check_limit(max(width, height), limits.side, "The larger of width and height", "side")
    _check_limit(width * height, limits.pixels, f"width x height ({width}x{height})", "pixels")


async def _until_disconnected(request: web.Request, job: Awaitable[T]) -> T:
    """Await `job`; if the client disconnects first, cancel it (the registry then stops its thread)."""
    task = asyncio.ensure_future(job)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                log.info("%s %s: the client disconnected; stopping its job", request.method, request.path)
                task.cancel()
                await asyncio.wait({task})  # bounded: the registry's await ends on cancel at once
                raise ApiError(503, "The client disconnected; the job was stopped.")
    finally:
        if not task.done():
            task.cancel()


def _json_array(value: str | None, name: str) -> Any:
    """ai-runner's `json_str_to_np_array` check, without numpy: bad JSON is a 400."""
    if not value:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"Error parsing JSON for {name}: {exc}") from None


class RunnerApi:
    """The runner API's handlers, bound to one settings object."""

    def __init__(self, settings: Settings, limits: BodyLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits or BodyLimits()
        self.hardware = HardwareInfo()
        self._openapi: bytes | None = None
        self._docs: bytes | None = None

    # --- registration -----------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        handlers: dict[str, Callable[..., Awaitable[web.StreamResponse]]] = {
            "genTextToImage": self.text_to_image,
            "genImageToImage": self.image_to_image,
            "genImageToVideo": self.image_to_video,
            "genUpscale": self.upscale,
            "genAudioToText": self.audio_to_text,
            "genSegmentAnything2": self.segment_anything_2,
            "genLLM": self.llm,
            "genImageToText": self.image_to_text,
            "genLiveVideoToVideo": self.live_video_to_video,
            "genTextToSpeech": self.text_to_speech,
            "health": self.health,
            "hardware_info": self.hardware_info,
            "hardware_stats": self.hardware_stats,
            "version": self.version,
        }
        for op in OPERATIONS:
            handler = self._endpoint(op, handlers[op.operation_id])
            # ai-runner also answers each path with a trailing slash (not in its schema).
            for path in (op.path, op.path + "/"):
                if op.method == "GET":
                    app.router.add_get(path, handler)
                else:
                    app.router.add_post(path, handler)
        app.router.add_get("/openapi.json", self.openapi_json)
        app.router.add_get("/docs", self.docs)

    def _endpoint(self, op: Operation, fn: Callable[..., Awaitable[web.StreamResponse]]) -> _Handler:
        token = self.settings.auth_token if op.secured else None
        body_model = op.body
        if body_model is None:
            return fn

        async def handle(request: web.Request) -> web.StreamResponse:
            if token:
                _check_bearer(request, token)
            body: pydantic.BaseModel
            if op.body_kind == "multipart":
                body = await read_multipart_body(request, body_model, self.limits, self.limits.file_limit(op.path))
            else:
                body = await read_json_body(request, body_model, self.limits)
            return await fn(request, body)

        handle.__name__ = fn.__name__
        return handle

    # --- shared steps -----------------------------------------------------------------------

    def _check_model(self, task: str, requested: str, *, period: str = ".") -> None:
        """A non-empty model id other than the pinned one is a 400, worded as ai-runner's."""
        settings = self.settings
        if settings.pipeline == task and requested and requested != settings.model_id:
            raise ModelMismatchError(
                f"pipeline configured with {settings.model_id} but called with {requested}{period}"
            )

    async def _run(
        self, request: web.Request, task: str, requested: str, call: Callable[[Any], T], *, period: str = "."
    ) -> T:
        self._check_model(task, requested, period=period)
        registry = request.app[REGISTRY_KEY]
        model_id = registry.resolve_model_id(task, requested)
        # No request timeout, as ai-runner (see `PipelineRegistry.run`); but a client that leaves
        # stops its job.
        return await _until_disconnected(request, registry.run(task, model_id, call))

    async def _image(self, upload: s.UploadedFile, max_pixels: int | None = None, name: str = "pixels") -> Any:
        limit = self.settings.limits.decoded_pixels
        try:
            # Bounded by the work: decoding an upload already limited in size (bodies.py) and in
            # pixels (checked from its header, before decoding), no I/O.
            image = await asyncio.to_thread(open_image, upload.data, limit)
        except ImageTooLargeError as exc:
            raise ApiError(413, f"{exc} (--limit decoded_pixels=N).") from None
        except ValueError:
            raise ApiError(415, "Unsupported image format or malformed file.") from None
        if max_pixels is not None:
            width, height = image.size
            _check_limit(width * height, max_pixels, f"The input image's pixels ({width}x{height})", name)
        return image

    def _check_steps(self, steps: int) -> None:
        _check_positive(steps, "num_inference_steps")
        _check_limit(steps, self.settings.limits.steps, "num_inference_steps", "steps")

    def _check_images(self, count: int) -> None:
        _check_positive(count, "num_images_per_prompt")
        _check_limit(count, self.settings.limits.images, "num_images_per_prompt", "images")

    # --- batch routes -----------------------------------------------------------------------

    async def text_to_image(self, request: web.Request, params: s.TextToImageParams) -> web.StreamResponse:
        if not params.prompt:
            raise ApiError(400, "Prompt must be provided.")
        _check_size(params.width, params.height, self.settings.limits)
        self._check_steps(params.num_inference_steps)
        self._check_images(params.num_images_per_prompt)
        from pipelines.batch.text_to_image import TextToImageInput

        inp = TextToImageInput(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            height=params.height,
            width=params.width,
            guidance_scale=params.guidance_scale,
            num_inference_steps=params.num_inference_steps,
            num_images_per_prompt=params.num_images_per_prompt,
            seed=params.seed,
            safety_check=params.safety_check,
            loras=params.loras,
        )
        images = await self._run(request, "text-to-image", params.model_id, lambda p: p.generate(inp))
        # Bounded by the work: PNG-encoding the images just generated, CPU only.
        return model_response(await asyncio.to_thread(image_response, images))

    async def image_to_image(self, request: web.Request, body: s.Body_genImageToImage) -> web.StreamResponse:
        from pipelines.batch.image_to_image import ImageToImageInput

        self._check_steps(body.num_inference_steps)
        self._check_images(body.num_images_per_prompt)
        inp = ImageToImageInput(
            prompt=body.prompt,
            image=await self._image(body.image, self.settings.limits.pixels),
            negative_prompt=body.negative_prompt,
            strength=body.strength,
            guidance_scale=body.guidance_scale,
            image_guidance_scale=body.image_guidance_scale,
            num_inference_steps=body.num_inference_steps,
            num_images_per_prompt=body.num_images_per_prompt,
            seed=body.seed,
            safety_check=body.safety_check,
            loras=body.loras,
        )
        images = await self._run(request, "image-to-image", body.model_id, lambda p: p.generate(inp))
        # Bounded by the work: PNG-encoding the images just generated, CPU only.
        return model_response(await asyncio.to_thread(image_response, images))

    async def image_to_video(self, request: web.Request, body: s.Body_genImageToVideo) -> web.StreamResponse:
        from pipelines.batch.image_to_video import ImageToVideoInput

        limits = self.settings.limits
        _check_size(body.width, body.height, limits)
        self._check_steps(body.num_inference_steps)
        inp = ImageToVideoInput(
            image=await self._image(body.image),
            height=body.height,
            width=body.width,
            fps=body.fps,
            motion_bucket_id=body.motion_bucket_id,
            noise_aug_strength=body.noise_aug_strength,
            num_inference_steps=body.num_inference_steps,
            seed=body.seed,
            safety_check=body.safety_check,
        )
        def generate(p: Any) -> Any:
            frames = int(getattr(p, "num_frames", 0) or 0)
            if frames > limits.video_frames:
                raise InvalidRequestError(
                    f"This image-to-video model makes {frames} frames: over this server's limit of "
                    f"{limits.video_frames} (--limit video_frames=N)."
                )
            return p.generate(inp)

        video = await self._run(request, "image-to-video", body.model_id, generate)
        # As ai-runner: one batch of frames, each a PNG data URL with the video's seed and flag.
        # Bounded by the work: PNG-encoding the images just generated, CPU only.
        frames = await asyncio.to_thread(image_response, video.frame_images())
        return model_response(s.VideoResponse(frames=[frames.images]))

    async def upscale(self, request: web.Request, body: s.Body_genUpscale) -> web.StreamResponse:
        from pipelines.batch.upscale import UpscaleInput

        self._check_steps(body.num_inference_steps)
        inp = UpscaleInput(
            prompt=body.prompt,
            image=await self._image(body.image, self.settings.limits.upscale_pixels, "upscale_pixels"),
            num_inference_steps=body.num_inference_steps,
            seed=body.seed,
            safety_check=body.safety_check,
        )
        images = await self._run(request, "upscale", body.model_id, lambda p: p.upscale(inp))
        # Bounded by the work: PNG-encoding the images just generated, CPU only.
        return model_response(await asyncio.to_thread(image_response, images))

    async def audio_to_text(self, request: web.Request, body: s.Body_genAudioToText) -> web.StreamResponse:
        return_timestamps = _parse_return_timestamps(body.return_timestamps)
        try:
            metadata = json.loads(body.metadata or "{}")
            duration = metadata.get("duration") if isinstance(metadata, dict) else None
            duration = float(duration) if duration is not None else None
        except (json.JSONDecodeError, TypeError, ValueError):
            raise ApiError(400, "Unable to calculate duration of file") from None
        try:
            # Bounded by the work: probing an in-memory upload limited in size (bodies.py).
            probed = await asyncio.to_thread(_probe_audio, body.audio.data)
        except ValueError:
            raise ApiError(415, _AUDIO_FORMAT_ERROR) from None
        if duration is None:
            duration = probed
        if duration is None:
            raise ApiError(400, "Unable to calculate duration of file")
        limit = self.settings.limits.audio_seconds
        # The audio itself, not `metadata.duration` (which, as in ai-runner, only decides the
        # word-timestamp limit).
        _check_limit(round(probed or 0.0, 1), limit, "The audio's length in seconds", "audio_seconds")
        audio = body.audio
        result = await self._run(
            request,
            "audio-to-text",
            body.model_id,
            lambda p: p(audio=audio, return_timestamps=return_timestamps, duration=duration),
        )
        return model_response(s.TextResponse.model_validate(result))

    async def segment_anything_2(self, request: web.Request, body: s.Body_genSegmentAnything2) -> web.StreamResponse:
        prompts = {
            name: _json_array(getattr(body, name), name) for name in ("point_coords", "point_labels", "box", "mask_input")
        }
        image = await self._image(body.image)
        flags = body.model_dump(include={"multimask_output", "return_logits", "normalize_coords"})
        result = await self._run(
            request, "segment-anything-2", body.model_id, lambda p: p(image, **prompts, **flags)
        )
        return model_response(s.MasksResponse.model_validate(result))

    async def llm(self, request: web.Request, body: s.LLMRequest) -> web.StreamResponse:
        from .llm import handle_llm  # streaming: the model's turn is held for the whole answer

        # ai-runner words this mismatch without the final period.
        self._check_model("llm", body.model, period="")
        _check_limit(body.max_tokens, self.settings.limits.llm_tokens, "max_tokens", "llm_tokens")
        return await handle_llm(request, body, request.app[REGISTRY_KEY].resolve_model_id("llm", body.model))

    async def image_to_text(self, request: web.Request, body: s.Body_genImageToText) -> web.StreamResponse:
        image = await self._image(body.image)
        prompt = body.prompt
        text = await self._run(
            request, "image-to-text", body.model_id, lambda p: p(prompt=prompt, image=image), period=""
        )
        return model_response(s.ImageToTextResponse(text=text))

    async def text_to_speech(self, request: web.Request, params: s.TextToSpeechParams) -> web.StreamResponse:
        if not params.text:
            raise ApiError(400, "Text input must be provided.")
        _check_limit(len(params.text), self.settings.limits.tts_chars, "The text's length in characters", "tts_chars")
        kwargs = params.model_dump(exclude={"model_id"})
        result = await self._run(request, "text-to-speech", params.model_id, lambda p: p(**kwargs))
        return model_response(s.AudioResponse.model_validate(result))

    # --- live -------------------------------------------------------------------------------

    async def live_video_to_video(self, request: web.Request, params: s.LiveVideoToVideoParams) -> web.StreamResponse:
        self._check_model(LIVE_TASK, params.model_id)
        manager = request.app[LIVE_MANAGER_KEY]
        clients = request.app.get(CLIENT_SESSIONS_KEY)
        try:
            if clients is not None:
                clients.check("live", request.remote or "", lambda stream: manager.get(stream) is not None)
            session = await manager.start(**params.model_dump())
        except SessionLimitError as exc:
            raise ApiError(503, str(exc)) from None
        if clients is not None:
            clients.add("live", request.remote or "", session.stream_id)
        # As ai-runner: the URLs are empty (the orchestrator sets them); plus the session id.
        body = s.LiveVideoToVideoResponse(subscribe_url="", publish_url="", control_url="").model_dump()
        body["stream_id"] = session.stream_id
        return web.json_response(body)

    # --- health, hardware, version, docs ----------------------------------------------------

    async def health(self, request: web.Request) -> web.StreamResponse:
        try:
            status = health_status(request.app, self.settings)
        except Exception:
            log.exception("failed to retrieve pipeline status")
            raise ApiError(500, "Failed to retrieve pipeline status.") from None
        return web.Response(body=_HEALTH_BODIES[status], content_type="application/json")

    async def hardware_info(self, request: web.Request) -> web.StreamResponse:
        # Bounded by NVML: driver queries with no wait of their own (`HardwareInfo` logs failures).
        gpu_info = await asyncio.to_thread(self.hardware.compute_info)
        return model_response(
            s.HardwareInformation(
                pipeline=self.settings.pipeline or "", model_id=self.settings.model_id or "", gpu_info=gpu_info
            )
        )

    async def hardware_stats(self, request: web.Request) -> web.StreamResponse:
        # Bounded by NVML, as `hardware_info`.
        gpu_stats = await asyncio.to_thread(self.hardware.utilization_stats)
        return model_response(
            s.HardwareStats(
                pipeline=self.settings.pipeline or "", model_id=self.settings.model_id or "", gpu_stats=gpu_stats
            )
        )

    async def version(self, request: web.Request) -> web.StreamResponse:
        return model_response(
            s.Version(
                pipeline=self.settings.pipeline or "",
                model_id=self.settings.model_id or "",
                version=self.settings.version,
            )
        )

    async def openapi_json(self, request: web.Request) -> web.StreamResponse:
        if self._openapi is None:
            from .openapi import build_openapi

            self._openapi = json.dumps(build_openapi(self.settings.version)).encode()
        return web.Response(body=self._openapi, content_type="application/json")

    async def docs(self, request: web.Request) -> web.StreamResponse:
        if self._docs is None:
            from .docs import render_docs
            from .openapi import build_openapi

            self._docs = render_docs(build_openapi(self.settings.version)).encode()
        return web.Response(body=self._docs, content_type="text/html", charset="utf-8")


def _check_bearer(request: web.Request, token: str) -> None:
    """FastAPI's `HTTPBearer(auto_error=False)` parsing, then ai-runner's comparison."""
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(credentials.encode(), token.encode()):
        raise ApiError(401, "Invalid bearer token.", _UNAUTHORIZED_HEADERS)
