"""Fixtures for the streamdiffusion tests: the tiny sd-turbo-family model (built once), one
torch thread, no Hugging Face network access."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest



@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads; on a busy 2-core machine they lose.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`livestream models tiny --task streamdiffusion`, written once per test session."""
    from livestream.cli import build_parser

    out = tmp_path_factory.getbasetemp() / "tiny-streamdiffusion"
    if not (out / "model_index.json").exists():
        args = build_parser().parse_args(["models", "tiny", "--task", "streamdiffusion", "--out", str(out)])
        assert args.handler(args) == 0
    return out


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
