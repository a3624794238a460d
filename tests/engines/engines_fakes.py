"""Fake TensorRT environments and engine folders for the cache tests (no TensorRT here)."""

from __future__ import annotations

from pathlib import Path

from pipelines.engines.cache import ENGINE_NAMES, EngineCache, EngineSpec, Environment

ADA = Environment(tensorrt="10.12.0", compute_capability="8.9", gpu_name="NVIDIA GeForce RTX 4090")
HOPPER = Environment(tensorrt="10.12.0", compute_capability="9.0", gpu_name="NVIDIA H100 80GB HBM3")
ADA_OLD_TRT = Environment(tensorrt="10.3.0", compute_capability="8.9", gpu_name="NVIDIA GeForce RTX 4090")


def spec(**changes: object) -> EngineSpec:
    fields: dict[str, object] = {
        "model_id": "stabilityai/sd-turbo",
        "weights_hash": "a" * 32,
        "sizes": ((512, 512), (768, 432)),
        "max_unet_batch": 16,
        "opt_unet_batch": 4,
        "max_vae_batch": 4,
    }
    fields.update(changes)
    return EngineSpec(**fields)  # type: ignore[arg-type]


def fake_build(cache: EngineCache, s: EngineSpec, env: Environment) -> Path:
    """What a finished build leaves: engine files, then the manifest."""
    folder = cache.folder(s, env)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ENGINE_NAMES:
        (folder / f"{name}.engine").write_bytes(name.encode() * 10)
    cache.write_manifest(folder, s, env, build_seconds=1.0)
    return folder
