"""Fixtures for the LLM tests: offline Hugging Face access, the tiny chat model, the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import livestream.api as api
from livestream.app import build_app
from livestream.settings import Settings
from pipelines.llm import LLMPipeline
from pipelines.registry import PipelineFactory, PipelineRegistry
from pipelines.testing import write_tiny_model


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Llama chat model, built once per test session."""
    out = tmp_path_factory.getbasetemp() / "tiny-llm"
    if not (out / "config.json").exists():
        write_tiny_model("llm", out)
    return out


@pytest.fixture(scope="session")
def llm_pipeline(tiny_llm_dir: Path) -> LLMPipeline:
    """The tiny model loaded once through `LLMPipeline` (the same from_pretrained path as a real one)."""
    return LLMPipeline(str(tiny_llm_dir), device="cpu")


@pytest.fixture
def make_llm_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    llm_pipeline: LLMPipeline,
    tiny_llm_dir: Path,
) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """`await make_llm_client(**settings_fields, factories=...)`: a client of the whole engine on loopback.

    By default the registry hands out the session's tiny `llm_pipeline` (loaded once) and the tiny
    model is the `llm` default; `builtin=True` keeps the engine's own registry (real loading).
    """

    async def factory(
        *, factories: Mapping[str, PipelineFactory] | None = None, builtin: bool = False, **fields: Any
    ) -> TestClient[Any, Any]:
        fields.setdefault("default_models", {"llm": str(tiny_llm_dir)})
        settings = replace(Settings(), **fields)
        if not builtin:

            def create_registry(s: Settings) -> PipelineRegistry:
                pinned = (s.pipeline, s.model_id) if s.pipeline and s.model_id else None
                return PipelineRegistry(
                    model_dir=s.model_dir,
                    default_models=s.default_models,
                    pinned=pinned,
                    max_queue=s.max_queue,
                    factories=factories or {"llm": lambda model_id, model_dir: llm_pipeline},
                )

            monkeypatch.setattr(api, "create_registry", create_registry)
        return await aiohttp_client(build_app(settings))

    return factory
