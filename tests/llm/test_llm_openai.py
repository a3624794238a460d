"""`/v1/chat/completions` and `/v1/models` with the official `openai` client on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from pipelines.llm import LLMPipeline

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
HELLO: list[Any] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello there"},
]


def openai_client(client: TestClient[Any, Any], api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=api_key, max_retries=0)


async def runner_text(client: TestClient[Any, Any], max_tokens: int) -> str:
    """The same greedy answer through the runner's /llm route."""
    resp = await client.post("/llm", json={"messages": HELLO, "temperature": 0, "max_tokens": max_tokens})
    return (await resp.json())["choices"][0]["message"]["content"]  # type: ignore[no-any-return]


async def test_chat_completion(make_llm_client: ClientFactory, tiny_llm_dir: Path) -> None:
    client = await make_llm_client()
    async with openai_client(client) as oai:
        completion = await oai.chat.completions.create(
            model=str(tiny_llm_dir), messages=HELLO, temperature=0, max_tokens=12
        )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == str(tiny_llm_dir)
    (choice,) = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    assert choice.message.content == await runner_text(client, 12)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12


async def test_chat_completion_stream(make_llm_client: ClientFactory, tiny_llm_dir: Path) -> None:
    client = await make_llm_client()
    async with openai_client(client) as oai:
        stream = await oai.chat.completions.create(
            model=str(tiny_llm_dir),
            messages=HELLO,
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    *with_choices, usage_chunk = chunks
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in with_choices] == [None] * (len(with_choices) - 1) + ["length"]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == await runner_text(client, 12)
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.completion_tokens == 12


async def test_stop_sequences_end_with_stop(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client()
    full = await runner_text(client, 24)
    stop = full[6:9]
    async with openai_client(client) as oai:
        completion = await oai.chat.completions.create(
            model="", messages=HELLO, temperature=0, max_tokens=24, stop=[stop, "never"]
        )
        streamed = await oai.chat.completions.create(
            model="", messages=HELLO, temperature=0, max_tokens=24, stop=stop, stream=True
        )
        chunks = [c async for c in streamed]
    assert completion.choices[0].message.content == full[: full.index(stop)]
    assert completion.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full[: full.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_sync_client_and_content_parts(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client()
    base_url = str(client.make_url("/v1"))
    messages = [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
    ]

    def call() -> Any:
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as oai:
            return oai.chat.completions.create(model="", messages=messages, temperature=0, max_tokens=12)  # type: ignore[arg-type]

    completion = await asyncio.to_thread(call)
    # developer is OpenAI's new name for system; text parts are joined: the same prompt as HELLO.
    assert completion.choices[0].message.content == await runner_text(client, 12)


async def test_models(make_llm_client: ClientFactory, tiny_llm_dir: Path) -> None:
    client = await make_llm_client(builtin=True, pipeline="llm", model_id=str(tiny_llm_dir))
    async with openai_client(client) as oai:
        models = await oai.models.list()
        assert [m.id for m in models.data] == [str(tiny_llm_dir)]
        assert models.data[0].object == "model"
        assert (await oai.models.retrieve(str(tiny_llm_dir))).id == str(tiny_llm_dir)
        with pytest.raises(openai.NotFoundError) as excinfo:
            await oai.models.retrieve("other/model")
        assert excinfo.value.code == "model_not_found"
        # Runner mode: a request for another model is OpenAI's 404.
        with pytest.raises(openai.NotFoundError):
            await oai.chat.completions.create(model="other/model", messages=HELLO)


@pytest.mark.parametrize(
    ("kwargs", "param", "match"),
    [
        ({"n": 2}, "n", "n must be 1"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages.0.role", "Input should be"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"messages": [{"role": "user", "content": "x" * 3000}]}, "messages", "context is 512 tokens"),
    ],
)
async def test_bad_requests_are_openai_400s(
    make_llm_client: ClientFactory, kwargs: dict[str, Any], param: str, match: str
) -> None:
    client = await make_llm_client()
    request: dict[str, Any] = {"model": "", "messages": HELLO, **kwargs}
    async with openai_client(client) as oai:
        with pytest.raises(openai.BadRequestError, match=match) as excinfo:
            await oai.chat.completions.create(**request)
    assert excinfo.value.status_code == 400
    assert excinfo.value.param == param
    body = excinfo.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    if "3000" in str(kwargs) or "xxxx" in str(kwargs):
        assert excinfo.value.code == "context_length_exceeded"


async def test_error_shape_on_the_wire(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client()
    resp = await client.post("/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


async def test_auth(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client(auth_token="secret")
    async with openai_client(client, api_key="wrong") as oai:
        with pytest.raises(openai.AuthenticationError) as excinfo:
            await oai.chat.completions.create(model="", messages=HELLO, max_tokens=2)
        assert excinfo.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await oai.models.list()
    async with openai_client(client, api_key="secret") as oai:
        completion = await oai.chat.completions.create(model="", messages=HELLO, max_tokens=2)
    assert completion.choices[0].message.content is not None


async def test_busy_is_an_openai_503(make_llm_client: ClientFactory, llm_pipeline: LLMPipeline) -> None:
    import time

    def slow(*_: Any) -> None:
        time.sleep(0.02)

    hook = llm_pipeline.backend.model.register_forward_hook(slow)  # type: ignore[attr-defined]
    client = await make_llm_client(max_queue=0)
    try:
        async with openai_client(client) as oai:
            stream = await oai.chat.completions.create(model="", messages=HELLO, max_tokens=400, stream=True)
            async for _ in stream:
                break
            with pytest.raises(openai.InternalServerError) as excinfo:
                await oai.chat.completions.create(model="", messages=HELLO, max_tokens=2)
            assert excinfo.value.status_code == 503
            assert excinfo.value.code == "server_busy"
            await stream.close()
    finally:
        hook.remove()
