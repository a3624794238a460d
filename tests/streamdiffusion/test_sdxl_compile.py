"""SDXL(-Turbo) under `acceleration="compile"` (part 5): the tiny random-weight SDXL through the
compile backend, with and without an SDXL ControlNet, against eager SDXL. Dynamo's `aot_eager`
stands in for Inductor (Inductor takes minutes per graph on this CPU; the benchmark and the GPU
check run it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sd_helpers import frames_of


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pipelines.testing import write_tiny_model
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    root = tmp_path_factory.mktemp("sdxl-compile")
    out = {"model": root / "tiny-sdxl", "cn": root / "cn"}
    write_tiny_model("streamdiffusion-sdxl", out["model"])
    write_tiny_controlnet(out["cn"], sdxl=True, seed=31)
    return out


def test_sdxl_with_a_controlnet_runs_under_torch_compile(tiny_sdxl: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the worker: the compiled SDXL backend (no "not built for SDXL" fallback), its
    compiled UNet call on SDXL's packed embeddings (hidden states + the pooled token: the
    text/time embeddings are added inside the compiled graph) equal to the eager SDXL backend's,
    and a ControlNet's residuals through the eager SDXL `unet_with_residuals`."""
    import torch

    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.stream_backends import CompiledBackend
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import VARIANTS

    monkeypatch.setenv("LIVESTREAM_TORCH_COMPILER", "aot_eager")
    cn = {"model_id": str(tiny_sdxl["cn"]), "preprocessor": "canny", "conditioning_scale": 0.8}
    pool = WorkerPool(compile_streams=(1,))
    pipe = StreamDiffusionPipeline(device="cpu", pool=pool)
    try:
        pipe.load(VARIANTS["streamdiffusion-sdxl"](model_id=str(tiny_sdxl["model"]), width=64, height=64, acceleration="compile", controlnets=[cn]))
        status = pipe.status()
        assert status["backend"] == "compile" and "acceleration" not in {w["field"] for w in status["warnings"]}
        frames = frames_of(8, 2)
        outs = [pipe.process(frames[k : k + 1]) for k in range(2)]
        assert all(o.shape == (1, 64, 64, 3) for o in outs) and not torch.equal(outs[0], outs[1])
        m = pipe._models
        assert m is not None
        backend = m.backend
        assert isinstance(backend, CompiledBackend) and backend.split_embeds is not None
        unet_keys = [k for k in backend.compiled if k[0] == "unet"]
        assert unet_keys and ("encode", (1, 3, 64, 64)) in backend.compiled  # compiled ahead at warm-up
        shape = unet_keys[0][1]
        gen = torch.Generator().manual_seed(0)
        sample = torch.randn(shape, generator=gen)
        t = torch.full((shape[0],), 500, dtype=torch.long)
        embeds = torch.randn(shape[0], 78, int(m.unet_config["cross_attention_dim"]), generator=gen)  # 77 tokens + the pooled one
        with torch.inference_mode():
            got = pipe._worker.call(backend.unet, sample, t, embeds)
            ref = pipe._worker.call(backend._eager.unet, sample, t, embeds)
        assert torch.allclose(got, ref, atol=1e-4)
    finally:
        pipe.close()
        pool.close()
