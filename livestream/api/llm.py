"""The runner's `/llm` route, answered as ai-runner answers it (v0.14.1 `routes/llm.py`).

- `stream: false`: one `LLMResponse` with `choices[0].message`, `finish_reason` "stop" and the
  token counts in `usage`.
- `stream: true`: Server-Sent Events, each `data: <LLMResponse JSON>` with `choices[0].delta`
  and the running `usage`; a last chunk with an empty delta and `finish_reason` "stop"; then
  `data: [DONE]`. An error after the stream started is sent as `data: {"error": "<message>"}`
  and the stream ends there (no `[DONE]`), as ai-runner does.

ai-runner sends "stop" even when `max_tokens` cut the answer short, and go-livepeer and the
SDKs look for it, so this route does too; `/v1/chat/completions` reports "length".

Beyond ai-runner: roles other than system/user/assistant and an empty `messages` are 422s
here (ai-runner answers them with a 500), input longer than the context is a 400 naming both
lengths, and a full queue is a 503.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiohttp import web

from pipelines.errors import PipelineError
from pipelines.llm import ROLES, ChatMessage, Finished, SamplingParams, TextDelta

from . import schemas as s
from .chat import ChatJob, collect_text, open_chat, open_sse, send_sse
from .errors import RequestValidationError
from .media import model_response

__all__ = ["check_llm_request", "handle_llm"]

log = logging.getLogger(__name__)


def check_llm_request(body: s.LLMRequest) -> None:
    """422 (FastAPI's error list) for an empty `messages` or an unknown role."""
    if not body.messages:
        raise RequestValidationError(
            [
                {
                    "type": "too_short",
                    "loc": ["body", "messages"],
                    "msg": "List should have at least 1 item after validation, not 0",
                    "input": [],
                    "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0},
                }
            ]
        )
    expected = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f" or '{ROLES[-1]}'"
    errors = [
        {
            "type": "literal_error",
            "loc": ["body", "messages", i, "role"],
            "msg": f"Input should be {expected}",
            "input": m.role,
            "ctx": {"expected": expected},
        }
        for i, m in enumerate(body.messages)
        if m.role not in ROLES
    ]
    if errors:
        raise RequestValidationError(errors)


async def handle_llm(request: web.Request, body: s.LLMRequest, model_id: str) -> web.StreamResponse:
    """Answer a validated `/llm` request on `model_id` (already checked against the pinned one)."""
    check_llm_request(body)
    messages = [ChatMessage(m.role, m.content) for m in body.messages]
    params = SamplingParams(
        max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k
    )
    try:
        async with open_chat(request, model_id, messages, params) as job:
            if body.stream:
                return await _stream(request, job)
            return await _complete(request, job)
    except ConnectionResetError:
        # Nobody reads this answer; it only ends the handler.
        log.debug("llm: client went away; generation stopped")
        return web.Response(status=499)


async def _complete(request: web.Request, job: ChatJob) -> web.StreamResponse:
    text, finished = await collect_text(request, job)
    message = s.LLMMessage(role="assistant", content=text)
    choice = s.LLMChoice(index=0, finish_reason="stop", message=message)
    return model_response(_response(job, finished.completion_tokens, choice))


async def _stream(request: web.Request, job: ChatJob) -> web.StreamResponse:
    def chunk(content: str, completion_tokens: int, finish_reason: str = "") -> dict[str, Any]:
        # `LLMResponse(...).model_dump_json()`, built as a dict: this runs once per token.
        return {
            "id": job.id,
            "model": job.model_id,
            "created": job.created,
            "usage": {
                "prompt_tokens": job.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": job.prompt_tokens + completion_tokens,
            },
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish_reason,
                    "delta": {"role": "assistant", "content": content},
                    "message": None,
                }
            ],
        }

    response = await open_sse(request)
    try:
        async for event in job.events:
            if isinstance(event, TextDelta):
                await send_sse(response, chunk(event.text, event.completion_tokens))
            else:
                assert isinstance(event, Finished)
                await send_sse(response, chunk("", event.completion_tokens, "stop"))
        await send_sse(response, "[DONE]")
    except PipelineError as exc:
        log.error("llm: error while streaming: %s", exc)
        error: dict[str, Any] = {"error": str(exc)}
        with contextlib.suppress(ConnectionResetError):
            await send_sse(response, error)
    except ConnectionResetError:
        log.debug("llm: client went away mid-stream; generation stopped")
    return response


def _response(job: ChatJob, completion_tokens: int, choice: s.LLMChoice) -> s.LLMResponse:
    usage = s.LLMTokenUsage(
        prompt_tokens=job.prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=job.prompt_tokens + completion_tokens,
    )
    return s.LLMResponse(id=job.id, model=job.model_id, created=job.created, usage=usage, choices=[choice])
