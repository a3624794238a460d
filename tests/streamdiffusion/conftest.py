"""Fixtures for the streamdiffusion tests; HF offline mode, one torch thread and the tiny
sd-turbo-family model come from the root `tests/conftest.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every streamdiffusion test runs torch on one thread (the root `one_torch_thread`)."""


@pytest.fixture(scope="session")
def tiny_sd_dir(tiny_streamdiffusion_dir: Path) -> Path:
    """The root `tiny_streamdiffusion_dir`, under the name these tests use."""
    return tiny_streamdiffusion_dir


@pytest.fixture
def make_pipeline(tiny_sd_dir: Path) -> Iterator[Callable[..., Any]]:
    """`make_pipeline(**params)`: a loaded `StreamDiffusionPipeline` on the tiny model (CPU)."""
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    made: list[StreamDiffusionPipeline] = []

    def make(**params: Any) -> StreamDiffusionPipeline:
        params.setdefault("model_id", str(tiny_sd_dir))
        pipe = StreamDiffusionPipeline(device="cpu")
        pipe.load(StreamDiffusionParams(**params))
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        pipe.close()
