"""Fixtures for the engine tests: the tiny sd-turbo-family model (built once), one torch
thread, no Hugging Face network access."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`livestream models tiny --task streamdiffusion`, written once per test session."""
    from livestream.cli import build_parser

    out = tmp_path_factory.getbasetemp() / "tiny-streamdiffusion"
    if not (out / "model_index.json").exists():
        args = build_parser().parse_args(["models", "tiny", "--task", "streamdiffusion", "--out", str(out)])
        assert args.handler(args) == 0
    return out
