"""`pipelines.live.precompile`: a new size is compiled in a child process whose result reaches
this process through Inductor's on-disk caches; the child is bounded and killed with its session."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.live.precompile import (
    PrecompileCancelled,
    PrecompileError,
    PrecompileJob,
    Precompiler,
    cache_counters,
)
from pipelines.live.streamdiffusion_params import StreamDiffusionParams

DECODE_8 = (("decode", ((1, 4, 8, 8),)),)


def _job(model: str, cache_dir: Path, shapes: Any = DECODE_8) -> PrecompileJob:
    params = StreamDiffusionParams(model_id=model, acceleration="compile", width=64, height=64)
    from pipelines.live.streamdiffusion import load_models

    return PrecompileJob(load_models, params=params, model_dir=None, device="cpu", shapes=shapes, cache_dir=str(cache_dir), threads=1)


def _no_children() -> bool:
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not multiprocessing.active_children()


def test_cancel_kills_the_child_at_once(tiny_sd_dir: Path, tmp_path: Path) -> None:
    pre = Precompiler(timeout_s=600)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            pre.run(_job(str(tiny_sd_dir), tmp_path))
        except BaseException as exc:  # checked below
            outcome.append(exc)

    thread = threading.Thread(target=run, name="test-precompile")
    thread.start()
    deadline = time.monotonic() + 30
    while not multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    pre.cancel()  # the session ended
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], PrecompileCancelled)
    assert _no_children()
    with pytest.raises(PrecompileCancelled):  # a cancelled precompiler starts nothing more
        pre.run(_job(str(tiny_sd_dir), tmp_path))


def test_a_child_past_its_timeout_is_killed(tiny_sd_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PrecompileError, match="longer than 0.5 s"):
        Precompiler(timeout_s=0.5).run(_job(str(tiny_sd_dir), tmp_path))
    assert _no_children()


@pytest.mark.slow  # the child imports torch and diffusers (10 s and more on a small machine)
def test_a_failing_child_reports_why(tmp_path: Path) -> None:
    with pytest.raises(PrecompileError, match="ModelNotFoundError: .*no-such-model.* does not exist"):
        Precompiler(timeout_s=300).run(_job(str(tmp_path / "no-such-model"), tmp_path))
    assert _no_children()


@pytest.mark.slow
# Third party: importing Inductor's CPU backend touches torch.jit.script_method (torch 2.13).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_the_childs_inductor_compile_is_a_cache_hit_here(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child compiles the tiny model's VAE decoder with Inductor; the same compile here then
    loads it from the FX graph cache (a hit, no miss): nothing is generated or built twice."""
    import torch
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    from pipelines.live.streamdiffusion import load_models

    monkeypatch.setenv("LIVESTREAM_TORCH_COMPILER", "inductor")
    cache = tmp_path / "inductor"
    seconds = Precompiler(timeout_s=600).run(_job(str(tiny_sd_dir), cache))
    assert seconds > 0
    assert _no_children()
    torch._dynamo.reset()
    with temporary_cache_dir(str(cache)):
        params = StreamDiffusionParams(model_id=str(tiny_sd_dir), acceleration="compile")
        models = load_models(params, model_dir=None, device=torch.device("cpu"))
        before = cache_counters()
        models.backend.prepare(list(DECODE_8), models.dtype)  # type: ignore[attr-defined]
        after = cache_counters()
    torch._dynamo.reset()
    assert after["fxgraph_hit"] - before["fxgraph_hit"] >= 1
    assert after["fxgraph_miss"] == before["fxgraph_miss"]
