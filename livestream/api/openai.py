"""An OpenAI-compatible chat API on the `llm` models: `POST /v1/chat/completions`, `GET /v1/models`.

Requests, responses and stream chunks have OpenAI's shapes (`chat.completion`,
`chat.completion.chunk` with a first `role` delta and a last empty delta carrying
`finish_reason` "stop" or "length", `stream_options.include_usage`, `data: [DONE]`), so the
official `openai` client works unchanged. Errors, on every `/v1` route, are OpenAI's
`{"error": {"message", "type", "param", "code"}}`: these handlers build their own error
responses, so the runner API's error middleware never reshapes them.

Supported: `messages` (system/developer/user/assistant; text content or text parts), `model`,
`max_tokens`/`max_completion_tokens` (default: the rest of the context), `temperature`
(default 1), `top_p`, `top_k` (vLLM's extension), `stop` (up to 4), `n` (1 only), `stream`,
`stream_options`. Other OpenAI fields are accepted and ignored; tools, images and logprobs are
not implemented.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import Any, Literal

import pydantic
from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field

from pipelines.errors import (
    InvalidRequestError,
    ModelLoadError,
    ModelMismatchError,
    PipelineBusyError,
    PipelineError,
    PipelineNotAvailableError,
)
from pipelines.llm import ChatMessage, ContextLengthError, Finished, SamplingParams, TextDelta

from ..keys import REGISTRY_KEY
from ..settings import Settings
from .chat import TASK, ChatJob, collect_text, open_chat, open_sse, send_sse

__all__ = ["ChatCompletionRequest", "add_openai_routes", "openai_error"]

log = logging.getLogger(__name__)

#: Asking for "as many as fit": `LLMPipeline.prepare` cuts this to the rest of the context.
_UNTIL_CONTEXT_ENDS = 1 << 30
_ROLE_ALIASES = {"developer": "system"}


class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The supported part of OpenAI's chat completion request."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, ge=-1)
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None

    def sampling(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or _UNTIL_CONTEXT_ENDS,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(stop),
        )

    def chat_messages(self) -> list[ChatMessage]:
        return [ChatMessage(_ROLE_ALIASES.get(m.role, m.role), m.text()) for m in self.messages]


class _OpenAIError(Exception):
    def __init__(
        self, status: int, message: str, type_: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.response = openai_error(status, message, type_, param, code)


def openai_error(
    status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status
    )


def add_openai_routes(app: web.Application, settings: Settings) -> None:
    api = _OpenAIApi(settings)
    app.router.add_post("/v1/chat/completions", api.chat_completions)
    app.router.add_get("/v1/models", api.list_models)
    app.router.add_get("/v1/models/{model:.+}", api.retrieve_model)


class _OpenAIApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.created = int(time.time())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_auth(request)
            body = await self._read_body(request)
            model_id = self._model_id(request, body.model)
            async with open_chat(request, model_id, body.chat_messages(), body.sampling()) as job:
                if body.stream:
                    include_usage = body.stream_options is not None and body.stream_options.include_usage
                    return await _stream(request, job, include_usage)
                return await _complete(request, job)
        except _OpenAIError as exc:
            return exc.response
        except PipelineError as exc:
            return _pipeline_error(exc)
        except ConnectionResetError:
            log.debug("v1: client went away; generation stopped")
            return web.Response(status=499)  # nobody reads it
        except Exception:
            log.exception("v1: unhandled error in %s", request.path)
            return openai_error(500, "The server had an error while processing your request.", "server_error")

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_auth(request)
        except _OpenAIError as exc:
            return exc.response
        model_id = request.app[REGISTRY_KEY].resolve_model_id(TASK, "")
        return web.json_response({"object": "list", "data": [self._model_card(model_id)]})

    async def retrieve_model(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_auth(request)
            model_id = self._model_id(request, request.match_info["model"])
        except _OpenAIError as exc:
            return exc.response
        return web.json_response(self._model_card(model_id))

    def _model_card(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "livestream"}

    def _check_auth(self, request: web.Request) -> None:
        token = self.settings.auth_token
        if not token:
            return
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(credentials.encode(), token.encode()):
            raise _OpenAIError(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")

    @staticmethod
    async def _read_body(request: web.Request) -> ChatCompletionRequest:
        try:
            body = ChatCompletionRequest.model_validate_json(await request.read())
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(str(p) for p in err["loc"]) or None
            raise _OpenAIError(400, f"{param}: {err['msg']}" if param else err["msg"], "invalid_request_error", param)
        if body.n != 1:
            raise _OpenAIError(400, f"n must be 1 (one choice per request), got {body.n}.", "invalid_request_error", "n")
        if isinstance(body.stop, list) and len(body.stop) > 4:
            raise _OpenAIError(400, "stop takes at most 4 sequences.", "invalid_request_error", "stop")
        return body

    def _model_id(self, request: web.Request, requested: str) -> str:
        try:
            return request.app[REGISTRY_KEY].resolve_model_id(TASK, requested)
        except ModelMismatchError:
            raise _OpenAIError(
                404, f"The model `{requested}` does not exist.", "invalid_request_error", "model", "model_not_found"
            ) from None


def _pipeline_error(exc: PipelineError) -> web.Response:
    if isinstance(exc, ContextLengthError):
        return openai_error(400, str(exc), "invalid_request_error", "messages", "context_length_exceeded")
    if isinstance(exc, InvalidRequestError):
        return openai_error(400, str(exc), "invalid_request_error")
    if isinstance(exc, PipelineBusyError):
        return openai_error(503, str(exc), "server_error", code="server_busy")
    if isinstance(exc, PipelineNotAvailableError):
        return openai_error(503, str(exc), "server_error")
    if isinstance(exc, ModelLoadError):
        log.error("v1: %s", exc)
        return openai_error(500, str(exc), "server_error", "model", "model_load_failed")
    log.error("v1: %s", exc)
    return openai_error(500, str(exc) or "The model failed.", "server_error")


def _usage(job: ChatJob, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": job.prompt_tokens + completion_tokens,
    }


async def _complete(request: web.Request, job: ChatJob) -> web.StreamResponse:
    text, finished = await collect_text(request, job)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": finished.finish_reason,
    }
    return web.json_response(
        {
            "id": job.id,
            "object": "chat.completion",
            "created": job.created,
            "model": job.model_id,
            "choices": [choice],
            "usage": _usage(job, finished.completion_tokens),
            "system_fingerprint": None,
        }
    )


async def _stream(request: web.Request, job: ChatJob, include_usage: bool) -> web.StreamResponse:
    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": job.id,
            "object": "chat.completion.chunk",
            "created": job.created,
            "model": job.model_id,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            data["usage"] = None
        return data

    response = await open_sse(request)
    try:
        await send_sse(response, chunk({"role": "assistant", "content": ""}))
        async for event in job.events:
            if isinstance(event, TextDelta):
                await send_sse(response, chunk({"content": event.text}))
                continue
            assert isinstance(event, Finished)
            await send_sse(response, chunk({}, event.finish_reason))
            if include_usage:
                usage = {
                    "id": job.id,
                    "object": "chat.completion.chunk",
                    "created": job.created,
                    "model": job.model_id,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": _usage(job, event.completion_tokens),
                }
                await send_sse(response, usage)
        await send_sse(response, "[DONE]")
    except PipelineError as exc:
        log.error("v1: error while streaming: %s", exc)
        with contextlib.suppress(ConnectionResetError):
            await send_sse(
                response, {"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}}
            )
    except ConnectionResetError:
        log.debug("v1: client went away mid-stream; generation stopped")
    return response
