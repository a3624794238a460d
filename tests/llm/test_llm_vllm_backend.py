"""The vLLM backend's glue, against a stand-in `vllm` module (vLLM cannot be installed here).

What runs for real: `LLMPipeline` loading the tiny model's config and tokenizer, prompt
rendering and checks, and `VLLMBackend` turning vLLM's cumulative outputs into deltas, its
finish reasons into ours, and an early close into `abort`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ModelLoadError
from pipelines.llm import ChatMessage, Finished, LLMPipeline, SamplingParams, TextDelta


class FakeEngine:
    instances: list[FakeEngine] = []

    def __init__(self, args: Any) -> None:
        self.args = args
        self.aborted: list[str] = []
        self.sampling: list[Any] = []
        self.prompts: list[Any] = []
        FakeEngine.instances.append(self)

    @classmethod
    def from_engine_args(cls, args: Any) -> FakeEngine:
        return cls(args)

    async def generate(self, prompt: Any, sampling: Any, request_id: str) -> AsyncIterator[Any]:
        self.prompts.append(prompt)
        self.sampling.append(sampling)
        text = ""
        pieces = ["Hel", "lo", "", " world"]
        for i, piece in enumerate(pieces):
            text += piece
            last = i == len(pieces) - 1
            out = types.SimpleNamespace(text=text, token_ids=list(range(i + 1)), finish_reason="length" if last else None)
            yield types.SimpleNamespace(outputs=[out], finished=last)
            await asyncio.sleep(0)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        pass


class _Kwargs:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


@pytest.fixture
def fake_vllm() -> Iterator[type[FakeEngine]]:
    module = types.ModuleType("vllm")
    module.AsyncEngineArgs = _Kwargs  # type: ignore[attr-defined]
    module.AsyncLLMEngine = FakeEngine  # type: ignore[attr-defined]
    module.SamplingParams = _Kwargs  # type: ignore[attr-defined]
    FakeEngine.instances.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "vllm", module)
        yield FakeEngine


async def test_vllm_backend_streams_deltas_and_finish(fake_vllm: type[FakeEngine], tiny_llm_dir: Path) -> None:
    pipeline = LLMPipeline(str(tiny_llm_dir), device="cpu", backend="vllm")
    assert pipeline.backend_name == "vllm" and pipeline.concurrency == 128
    (engine,) = fake_vllm.instances
    assert engine.args.max_model_len == 512 and engine.args.enable_prefix_caching

    params = SamplingParams(temperature=0.5, max_tokens=10, top_k=-1, stop=("x",))
    prompt = pipeline.prepare([ChatMessage("user", "Hi")], params)
    events = [e async for e in pipeline.stream(prompt, params)]
    assert events == [
        TextDelta("Hel", 1),
        TextDelta("lo", 2),
        TextDelta(" world", 4),
        Finished("length", len(prompt.token_ids), 4),
    ]
    assert engine.prompts == [{"prompt_token_ids": list(prompt.token_ids)}]
    (sampling,) = engine.sampling
    assert (sampling.max_tokens, sampling.temperature, sampling.top_k, sampling.stop) == (10, 0.5, -1, ["x"])
    assert engine.aborted == []


async def test_vllm_backend_aborts_a_closed_stream(fake_vllm: type[FakeEngine], tiny_llm_dir: Path) -> None:
    pipeline = LLMPipeline(str(tiny_llm_dir), device="cpu", backend="vllm")
    params = SamplingParams(max_tokens=10)
    stream = pipeline.stream(pipeline.prepare([ChatMessage("user", "Hi")], params), params)
    async with contextlib.aclosing(stream):
        async for _ in stream:
            break
    (engine,) = fake_vllm.instances
    assert len(engine.aborted) == 1 and engine.aborted[0].startswith("llm-")


def test_vllm_backend_without_vllm_is_a_clear_load_error(tiny_llm_dir: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "vllm", None)  # import fails
        with pytest.raises(ModelLoadError, match="vLLM backend needs vLLM"):
            LLMPipeline(str(tiny_llm_dir), device="cpu", backend="vllm")
    with pytest.raises(ModelLoadError, match="Unknown LLM backend 'nope'"):
        LLMPipeline(str(tiny_llm_dir), device="cpu", backend="nope")
