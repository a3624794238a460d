"""What `/llm` and `/v1/chat/completions` share: a model's turn, a token stream, SSE framing.

`open_chat` takes the model's turn from the registry (queueing fairly, 503 when the queue is
full), renders and checks the prompt, and yields the token stream. Leaving the block, however
it is left, stops generation and waits for the model to be idle before the turn passes on.

Client disconnects: aiohttp (without `handler_cancellation`) does not cancel a handler whose
client went away, so handlers check `client_gone` at every token, and a streamed write to a
closed connection raises `ConnectionResetError`; either way the handler leaves the block, which
stops the model within one decoding step. A request still waiting in the queue is noticed when
its turn comes, before any work is done for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipelines.llm import ChatMessage, Finished, LLMPipeline, Prompt, SamplingParams, TextDelta

from ..keys import REGISTRY_KEY

__all__ = ["ChatJob", "client_gone", "collect_text", "open_chat", "open_sse", "send_sse", "sse_data"]

log = logging.getLogger(__name__)

TASK = "llm"

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    # Reverse proxies (nginx) would otherwise buffer the stream.
    "X-Accel-Buffering": "no",
}


@dataclass
class ChatJob:
    """One chat completion in progress, holding its model's turn."""

    pipeline: LLMPipeline
    model_id: str
    prompt: Prompt
    events: AsyncIterator[TextDelta | Finished]
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4()}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt.token_ids)


@contextlib.asynccontextmanager
async def open_chat(
    request: web.Request, model_id: str, messages: Sequence[ChatMessage], params: SamplingParams
) -> AsyncIterator[ChatJob]:
    """Take `model_id`'s turn, prepare the prompt, and yield the job with its token stream.

    Raises (before yielding, so before any response is started):
        PipelineBusyError: the model's queue is full.
        ModelLoadError: the model cannot be loaded.
        InvalidRequestError: the request cannot be run (`ContextLengthError`: too long).
    """
    registry = request.app[REGISTRY_KEY]
    async with registry.acquire(TASK, model_id) as pipeline:
        if client_gone(request):
            raise ConnectionResetError("the client went away while the request was queued")
        # Bounded by the work: rendering and tokenizing the request's messages, CPU only.
        prompt = await asyncio.to_thread(pipeline.prepare, messages, params)
        events = pipeline.stream(prompt, params)
        async with contextlib.aclosing(events):
            yield ChatJob(pipeline, model_id, prompt, events)


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def collect_text(request: web.Request, job: ChatJob) -> tuple[str, Finished]:
    """The whole answer of a completion that is not streamed, and the `Finished` that ends it.

    Raises:
        ConnectionResetError: the client went away (checked at every token).
    """
    parts: list[str] = []
    async for event in job.events:
        if client_gone(request):
            raise ConnectionResetError("the client went away")
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            return "".join(parts), event
    raise AssertionError("the token stream ended without Finished")


async def open_sse(request: web.Request) -> web.StreamResponse:
    """Start a `text/event-stream` response."""
    response = web.StreamResponse(headers=_SSE_HEADERS)
    await response.prepare(request)
    return response


#: Seconds one SSE write may wait for a client that stopped reading before it counts as gone
#: (its slot on the model is freed, as for a disconnect).
SSE_WRITE_TIMEOUT = 30.0


async def send_sse(response: web.StreamResponse, payload: str | dict[str, Any]) -> None:
    """Write one SSE event; a client that takes nothing for `SSE_WRITE_TIMEOUT` is gone
    (`ConnectionResetError`, as a disconnect)."""
    try:
        async with asyncio.timeout(SSE_WRITE_TIMEOUT):
            await response.write(sse_data(payload))
    except TimeoutError:
        raise ConnectionResetError(f"the client read nothing for {SSE_WRITE_TIMEOUT:g} s") from None


def sse_data(payload: str | dict[str, Any]) -> bytes:
    """One SSE event: `data: <payload>` and a blank line."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {text}\n\n".encode()
