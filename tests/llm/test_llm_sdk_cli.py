"""Livepeer's `livepeer-ai` SDK against `/llm`, and `livestream models tiny --task llm`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livepeer_ai import Livepeer
from livepeer_ai.models import errors as sdk_errors

from livestream.cli import main
from pipelines.llm import ChatMessage, LLMPipeline, SamplingParams

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def test_livepeer_sdk_llm(make_llm_client: ClientFactory) -> None:
    client = await make_llm_client(auth_token="secret")
    url = str(client.make_url("/")).rstrip("/")

    def call() -> Any:
        sdk = Livepeer(server_url=url, http_bearer="secret")
        return sdk.generate.llm(request={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})

    res = await asyncio.to_thread(call)
    answer = res.llm_response
    assert answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens <= 4

    def bad_role() -> Any:
        sdk = Livepeer(server_url=url, http_bearer="secret")
        return sdk.generate.llm(request={"messages": [{"role": "wizard", "content": "Hi"}]})

    with pytest.raises(sdk_errors.HTTPValidationError):
        await asyncio.to_thread(bad_role)


async def test_cli_writes_a_loadable_llm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny-llm"
    assert await asyncio.to_thread(main, ["models", "tiny", "--task", "llm", "--out", str(out)]) == 0
    assert "not a real model" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "README.md"} <= {
        f.name for f in out.iterdir()
    }
    assert sum(f.stat().st_size for f in out.iterdir()) < 1024**2
    pipeline = await asyncio.to_thread(LLMPipeline, str(out), device="cpu")
    params = SamplingParams(max_tokens=3)
    events = [e async for e in pipeline.stream(pipeline.prepare([ChatMessage("user", "Hi")], params), params)]
    assert events[-1].completion_tokens <= 3  # type: ignore[union-attr]
