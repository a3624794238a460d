"""TensorRT engines for the tiny model, run against PyTorch: only where TensorRT imports and a
CUDA GPU is present (the Docker image). TensorRT cannot be installed on the machines these
tests run on otherwise (PyPI's tensorrt-cu12/-cu13 libs fetch the libraries from NVIDIA's own
index at install time), so here they skip, saying so; see docs/tensorrt.md."""

from __future__ import annotations

from pathlib import Path

import pytest

trt = pytest.importorskip(
    "tensorrt",
    reason="TensorRT not installable here (PyPI's tensorrt-cu12 pulls the libraries from NVIDIA's index); "
    "run in the Docker image: docs/tensorrt.md",
)
torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines need an NVIDIA GPU"),
]


def test_build_find_and_run_engines_against_pytorch(tiny_streamdiffusion_dir: Path, tmp_path: Path) -> None:
    from pipelines.engines.build import build_engines, spec_for_model
    from pipelines.engines.cache import EngineCache, Environment
    from pipelines.engines.onnx_export import _inputs, _wrappers, load_components
    from pipelines.live.tensorrt_backend import TensorRTBackend

    spec = spec_for_model(str(tiny_streamdiffusion_dir), sizes=((64, 64), (128, 96)), max_streams=2, rows_per_stream=3)
    cache = EngineCache(tmp_path)
    env = Environment.current()
    folder = build_engines(spec, cache, env=env, progress=False)
    assert build_engines(spec, cache, env=env) == folder  # found again, not rebuilt
    backend = TensorRTBackend.from_cache(
        tmp_path, str(tiny_streamdiffusion_dir), model_dir=None, vae="taesd", width=96, height=64, unet_batch=6, dtype=torch.float32
    )
    parts = load_components(str(tiny_streamdiffusion_dir))
    wrappers = _wrappers(parts)
    for batch, (w, h) in ((1, (64, 64)), (6, (128, 96)), (3, (96, 64))):
        x = {k: v.cuda() for k, v in _inputs("unet", parts, batch, w, h).items()}
        with torch.no_grad():
            expected = wrappers["unet"].cuda()(*x.values())
        for _ in range(3):  # eager, capture, replay
            got = backend.unet(x["sample"], x["timestep"].long(), x["encoder_hidden_states"])
        assert (got - expected).abs().max().item() < 5e-2  # FP16 engine vs FP32 PyTorch
        images = _inputs("vae_encoder", parts, min(batch, 2), w, h)["images"].cuda()
        with torch.no_grad():
            latents = wrappers["vae_encoder"].cuda()(images)
        assert (backend.encode(images) - latents).abs().max().item() < 5e-2
    with pytest.raises(ValueError, match="outside the engine's profile"):
        backend.decode(torch.zeros(3, 4, 8, 8, device="cuda"))  # VAE batch 3 > 2 streams
