"""Fixtures for the LLM tests: offline Hugging Face access, the tiny chat model, the engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.llm import LLMPipeline
from pipelines.tiny import write_tiny_model


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    # Nothing may be downloaded here; with this set, an id that is not cached fails at once.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


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
