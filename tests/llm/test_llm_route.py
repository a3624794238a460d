"""The runner's `/llm` route over real HTTP with the tiny model: ai-runner's shapes, SSE, errors, disconnects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient
from httpx_sse import aconnect_sse

from livestream.api import schemas as s
from livestream.keys import REGISTRY_KEY
from pipelines.errors import InferenceError
from pipelines.llm import ChatMessage, Finished, LLMPipeline, Prompt, SamplingParams, TextDelta

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
HELLO = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello there"}]


def greedy_text(pipeline: LLMPipeline, max_tokens: int) -> str:
    import torch

    messages = [ChatMessage(m["role"], m["content"]) for m in HELLO]
    prompt = pipeline.prepare(messages, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    ids = torch.tensor([prompt.token_ids])
    model: Any = pipeline.backend.model  # type: ignore[attr-defined]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False)
    return pipeline.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)  # type: ignore[no-any-return]


class FakeLLM:
    """Streams one delta, then fails or waits for `gate`."""

    task = "llm"
    concurrency = 1

    def __init__(self, model_id: str, fail: bool = False) -> None:
        self.model_id = model_id
        self.fail = fail
        self.gate = asyncio.Event()
        self.closed = 0

    def prepare(self, messages: list[ChatMessage], params: SamplingParams) -> Prompt:
        return Prompt("p", (1, 2, 3), params.max_tokens)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[TextDelta | Finished]:
        try:
            yield TextDelta("Hel", 1)
            if self.fail:
                raise InferenceError("The model failed while generating: boom")
            await self.gate.wait()
            yield TextDelta("lo", 2)
            yield Finished("stop", 3, 2)
        finally:
            self.closed += 1


async def test_llm_non_stream(make_llm_client: ClientFactory, llm_pipeline: LLMPipeline, tiny_llm_dir: Path) -> None:
    client = await make_llm_client()
    resp = await client.post("/llm", json={"messages": HELLO, "temperature": 0, "max_tokens": 12})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"id", "model", "created", "usage", "choices"}
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == str(tiny_llm_dir)
    assert abs(body["created"] - time.time()) < 60
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "delta": None,
            "message": {"role": "assistant", "content": greedy_text(llm_pipeline, 12)},
        }
    ]
    usage = body["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12 and usage["prompt_tokens"] > 10


async def test_llm_defaults_are_ai_runners(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client()
    resp = await client.post("/llm", json={"messages": [{"role": "user", "content": "Hi"}]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["usage"]["completion_tokens"] <= 256


async def test_llm_stream_with_an_sse_client(
    make_llm_client: ClientFactory, llm_pipeline: LLMPipeline, tiny_llm_dir: Path
) -> None:
    client = await make_llm_client()
    url = str(client.make_url("/llm"))
    request = {"messages": HELLO, "temperature": 0, "max_tokens": 12, "stream": True}
    async with httpx.AsyncClient() as http, aconnect_sse(http, "POST", url, json=request) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        data = [event.data async for event in source.aiter_sse()]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for chunk in chunks:
        assert s.LLMResponse.model_validate(chunk).model_dump(mode="json") == chunk
        assert chunk["id"] == chunks[0]["id"] and chunk["model"] == str(tiny_llm_dir)
        (choice,) = chunk["choices"]
        assert choice["index"] == 0 and choice["message"] is None and choice["delta"]["role"] == "assistant"
    *deltas, last = chunks
    assert all(c["choices"][0]["finish_reason"] == "" for c in deltas)
    assert last["choices"][0] == {
        "index": 0,
        "finish_reason": "stop",
        "delta": {"role": "assistant", "content": ""},
        "message": None,
    }
    assert "".join(c["choices"][0]["delta"]["content"] for c in deltas) == greedy_text(llm_pipeline, 12)
    assert [c["usage"]["completion_tokens"] for c in deltas] == sorted(c["usage"]["completion_tokens"] for c in deltas)
    assert last["usage"]["completion_tokens"] == 12


@pytest.mark.parametrize(
    ("messages", "loc", "type_"),
    [
        ([], ["body", "messages"], "too_short"),
        ([{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}], ["body", "messages", 1, "role"], "literal_error"),
        ([{"role": "user"}], ["body", "messages", 0, "content"], "missing"),
    ],
)
async def test_llm_bad_messages_are_422(
    make_llm_client: ClientFactory, messages: list[dict[str, str]], loc: list[Any], type_: str
) -> None:
    client = await make_llm_client()
    resp = await client.post("/llm", json={"messages": messages})
    assert resp.status == 422
    (error,) = (await resp.json())["detail"]
    assert error["loc"] == loc and error["type"] == type_


async def test_llm_over_long_input_is_400(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client()
    resp = await client.post("/llm", json={"messages": [{"role": "user", "content": "x" * 3000}], "stream": True})
    assert resp.status == 400
    msg = (await resp.json())["detail"]["msg"]
    assert "tokens long, but the model's context is 512 tokens" in msg


async def test_llm_runner_mode_loads_the_model_and_checks_model_id(
    make_llm_client: ClientFactory, tiny_llm_dir: Path
) -> None:
    client = await make_llm_client(builtin=True, pipeline="llm", model_id=str(tiny_llm_dir))
    resp = await client.post("/llm", json={"messages": HELLO, "model": "other/model"})
    assert resp.status == 400
    assert (await resp.json()) == {"detail": {"msg": f"pipeline configured with {tiny_llm_dir} but called with other/model"}}
    resp = await client.post("/llm", json={"messages": HELLO, "model": str(tiny_llm_dir), "max_tokens": 4})
    assert resp.status == 200
    assert (await resp.json())["usage"]["completion_tokens"] <= 4
    health = await client.get("/health")
    assert (await health.json()) == {"status": "OK"}


async def test_llm_error_mid_stream_is_sent_as_ai_runner_sends_it(make_llm_client: ClientFactory) -> None:
    fake = FakeLLM("m", fail=True)
    client = await make_llm_client(factories={"llm": lambda model_id, model_dir: fake})
    resp = await client.post("/llm", json={"messages": HELLO, "stream": True})
    assert resp.status == 200
    text = await resp.text()
    events = [line for line in text.split("\n\n") if line]
    assert len(events) == 2
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["delta"]["content"] == "Hel"
    assert json.loads(events[1].removeprefix("data: ")) == {"error": "The model failed while generating: boom"}
    assert fake.closed == 1


async def test_llm_error_without_stream_is_500(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client(factories={"llm": lambda model_id, model_dir: FakeLLM("m", fail=True)})
    resp = await client.post("/llm", json={"messages": HELLO})
    assert resp.status == 500
    assert (await resp.json()) == {"detail": {"msg": "The model failed while generating: boom"}}


async def test_llm_full_queue_is_503_and_the_queue_is_fair(make_llm_client: ClientFactory) -> None:
    fake = FakeLLM("m")
    client = await make_llm_client(max_queue=1, factories={"llm": lambda model_id, model_dir: fake})
    first = asyncio.create_task(client.post("/llm", json={"messages": HELLO}))
    slot = ("llm", client.app[REGISTRY_KEY].resolve_model_id("llm", ""))
    async with asyncio.timeout(10):
        while not (slot in client.app[REGISTRY_KEY]._slots and client.app[REGISTRY_KEY]._slots[slot].admitted == 1):
            await asyncio.sleep(0.01)
    second = asyncio.create_task(client.post("/llm", json={"messages": HELLO}))
    async with asyncio.timeout(10):  # no public view of the queue
        while client.app[REGISTRY_KEY]._slots[slot].admitted < 2:
            await asyncio.sleep(0.01)
    resp = await client.post("/llm", json={"messages": HELLO})
    assert resp.status == 503
    assert "busy" in (await resp.json())["detail"]["msg"]
    fake.gate.set()
    for task in (first, second):
        resp = await task
        assert resp.status == 200
        assert (await resp.json())["choices"][0]["message"]["content"] == "Hello"


async def slow_steps(pipeline: LLMPipeline, delay: float) -> tuple[list[int], Any]:
    """Slow the model down to `delay` per step and count its steps."""
    steps = [0]

    def hook(*_: Any) -> None:
        steps[0] += 1
        time.sleep(delay)

    model: Any = pipeline.backend.model  # type: ignore[attr-defined]
    return steps, model.register_forward_hook(hook)


async def until_free(client: TestClient[Any, Any], timeout: float = 5.0) -> None:
    """With max_queue=0, a new request gets through only once the model's turn is free."""
    async with asyncio.timeout(timeout):
        while True:
            resp = await client.post("/llm", json={"messages": HELLO, "max_tokens": 1})
            if resp.status == 200:
                return
            assert resp.status == 503
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("stream", [True, False])
async def test_llm_client_disconnect_stops_generation_and_frees_the_model(
    make_llm_client: ClientFactory, llm_pipeline: LLMPipeline, stream: bool
) -> None:
    client = await make_llm_client(max_queue=0)
    steps, hook = await slow_steps(llm_pipeline, 0.02)
    try:
        request = {"messages": HELLO, "max_tokens": 400, "stream": stream}
        if stream:
            resp = await client.post("/llm", json=request)
            assert resp.status == 200
            assert (await resp.content.readline()).startswith(b"data: {")
            resp.close()  # drops the connection mid-stream
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await client.post("/llm", json=request)
        await until_free(client)
        stopped_at = steps[0]
        assert stopped_at < 100, "generation ran on after the client left"
        await asyncio.sleep(0.2)
        assert steps[0] == stopped_at
    finally:
        hook.remove()
    assert client.app[REGISTRY_KEY].health == "OK"
