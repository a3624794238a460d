"""Fixtures for the pipeline tests: offline Hugging Face access and the tiny text-to-image model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.text_to_image import TextToImagePipeline
from pipelines.tiny import write_tiny_model


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    # Nothing may be downloaded here; with this set, an id that is not cached fails at once.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The tiny models gain nothing from intra-op threads, and on a busy 2-core machine
    # OpenMP's spinning makes them about 3x slower.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_t2i_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Stable Diffusion model, built once per test session."""
    out = tmp_path_factory.getbasetemp() / "tiny-text-to-image"
    if not (out / "model_index.json").exists():
        write_tiny_model("text-to-image", out)
    return out


@pytest.fixture(scope="session")
def t2i_pipeline(tiny_t2i_dir: Path) -> TextToImagePipeline:
    """The tiny model loaded once through `TextToImagePipeline` (the same from_pretrained path)."""
    return TextToImagePipeline(str(tiny_t2i_dir), device="cpu")
