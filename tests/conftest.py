"""Fixtures shared by the test folders: no Hugging Face downloads, one torch thread, and the
tiny random-weight models, each written once per test session.

Shared helpers that are not fixtures go in uniquely named modules (`tests/live/live_helpers.py`),
never in a `conftest` a test imports: the conftest basenames collide.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from pipelines.testing import write_tiny_model

# The suite's fuzz tests (hypothesis, schemathesis) draw the same examples on every run, so a CI
# failure reproduces and CI does not fail at random; `make fuzz-long` (LIVESTREAM_FUZZ_EXAMPLES)
# draws new ones to explore.
hypothesis_settings.register_profile("repeatable", derandomize=True)
if not os.environ.get("LIVESTREAM_FUZZ_EXAMPLES"):
    hypothesis_settings.load_profile("repeatable")


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    # Nothing may be downloaded in the tests; with this set, an id that is not cached fails at once.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session", autouse=True)
def _url_guard_allows_loopback() -> Iterator[None]:
    # The tests' RTMP push targets and style-image servers listen on 127.0.0.1: allowed here by
    # the operator's setting (pipelines/url_guard.py); the guard's own tests pass a `UrlPolicy`.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "1")
        yield


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test: the tiny models gain nothing from more, and on a
    busy 2-core machine OpenMP's spinning makes them about 3x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_t2i_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Stable Diffusion model (`--task text-to-image`)."""
    out = tmp_path_factory.getbasetemp() / "tiny-text-to-image"
    if not (out / "model_index.json").exists():
        write_tiny_model("text-to-image", out)
    return out


@pytest.fixture(scope="session")
def tiny_streamdiffusion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`livestream models tiny --task streamdiffusion`: the tiny sd-turbo family with its TAESD."""
    from livestream.cli import build_parser

    out = tmp_path_factory.getbasetemp() / "tiny-streamdiffusion"
    if not (out / "model_index.json").exists():
        args = build_parser().parse_args(["models", "tiny", "--task", "streamdiffusion", "--out", str(out)])
        assert args.handler(args) == 0
    return out
