"""Fixtures for the pipeline tests: the tiny text-to-image model loaded once. Hugging Face offline,
`one_torch_thread` and `tiny_t2i_dir` come from `tests/conftest.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.batch.text_to_image import TextToImagePipeline


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every pipeline test runs on one torch thread."""


@pytest.fixture(scope="session")
def t2i_pipeline(tiny_t2i_dir: Path) -> TextToImagePipeline:
    """The tiny model loaded once through `TextToImagePipeline` (the same from_pretrained path)."""
    return TextToImagePipeline(str(tiny_t2i_dir), device="cpu")
