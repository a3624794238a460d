"""The engine cache's key, manifest and staleness rules, on the CPU with fake TensorRT
environments: an engine is reused only for the model, weights, ranges, TensorRT version and
GPU architecture it was built for; anything else is rebuilt or refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from engines_fakes import ADA, ADA_OLD_TRT, HOPPER, fake_build, spec

from pipelines.engines.cache import (
    EngineCache,
    EngineCacheError,
    Environment,
    StaleEngineError,
    parse_sizes,
    weights_fingerprint,
)


def test_the_key_covers_model_weights_ranges_tensorrt_and_gpu() -> None:
    base = spec()
    key = base.key(ADA)
    assert key == spec().key(ADA)  # deterministic
    # The GPU's marketing name is not part of it: same architecture, same engine.
    assert key == base.key(Environment("10.12.0", "8.9", "NVIDIA L40S"))
    others = [
        spec().key(ADA_OLD_TRT),
        spec().key(HOPPER),
        spec(model_id="stabilityai/sd-turbo-2").key(ADA),
        spec(weights_hash="b" * 32).key(ADA),
        spec(vae="kl").key(ADA),
        spec(sizes=((512, 512), (1024, 576))).key(ADA),  # wider range
        spec(sizes=((768, 432), (512, 512))).key(ADA),  # other optimum
        spec(max_unet_batch=8).key(ADA),
        spec(max_vae_batch=2).key(ADA),
        spec(precision="fp32").key(ADA),
    ]
    assert key not in others and len(set(others)) == len(others)
    # Sizes count as the ranges they span (+ optimum), so the same ranges share one engine.
    assert spec(sizes=((512, 512), (768, 432), (640, 480))).key(ADA) == key


def test_spec_validation_and_profiles() -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        spec(sizes=((500, 512),))
    with pytest.raises(ValueError, match="batches"):
        spec(opt_unet_batch=32)
    assert parse_sizes("512x512, 768X432") == ((512, 512), (768, 432))
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_sizes("512")
    profile = spec().profile("unet")
    # min/opt/max: batch 1..16 (opt 4), latents 54..64 high and 64..96 wide, opt 64x64.
    assert profile["sample"] == ((1, 4, 54, 64), (4, 4, 64, 64), (16, 4, 64, 96))
    assert profile["timestep"] == ((1,), (4,), (16,))
    assert spec().profile("vae_encoder")["images"] == ((1, 3, 432, 512), (1, 3, 512, 512), (4, 3, 512, 768))
    assert spec().profile("vae_decoder")["latent"][2] == (4, 4, 64, 96)


def test_found_again_on_the_same_machine(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    folder = fake_build(cache, spec(), ADA)
    assert cache.lookup(spec(), ADA) == folder
    entry = cache.find("stabilityai/sd-turbo", ADA, width=768, height=432, unet_batch=12, vae_batch=3, weights_hash="a" * 32)
    assert entry.path == folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["environment"]["tensorrt"] == "10.12.0" and manifest["key"] == spec().key(ADA)
    assert set(manifest["engines"]) == {"unet", "vae_encoder", "vae_decoder"}


@pytest.mark.parametrize(
    ("env", "weights", "request_", "reason"),
    [
        (ADA_OLD_TRT, "a" * 32, {}, "built with TensorRT 10.12.0, running 10.3.0"),
        (HOPPER, "a" * 32, {}, "built for compute capability 8.9"),
        (ADA, "b" * 32, {}, "built from other weights"),
        (ADA, "a" * 32, {"width": 1024, "height": 576}, "asked 1024x576"),
        (ADA, "a" * 32, {"unet_batch": 20}, "UNet batch 20"),
    ],
)
def test_a_stale_engine_is_never_used_silently(
    tmp_path: Path, env: Environment, weights: str, request_: dict[str, Any], reason: str
) -> None:
    cache = EngineCache(tmp_path)
    fake_build(cache, spec(), ADA)
    wanted = {"width": 512, "height": 512, "unet_batch": 4, **request_}
    with pytest.raises(StaleEngineError, match="livestream engines build") as info:
        cache.find("stabilityai/sd-turbo", env, weights_hash=weights, **wanted)
    assert any(reason in why for why in info.value.reasons), info.value.reasons
    # The exact-key lookup a build does finds nothing for the new environment/spec: it rebuilds.
    assert cache.lookup(spec(weights_hash=weights), env) is None or (env == ADA and weights == "a" * 32)


def test_nothing_built_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineCacheError, match="no TensorRT engines for stabilityai/sd-turbo"):
        EngineCache(tmp_path).find("stabilityai/sd-turbo", ADA, width=512, height=512)


def test_a_changed_or_missing_engine_file_or_edited_manifest_is_stale(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    folder = fake_build(cache, spec(), ADA)
    (folder / "unet.engine").write_bytes(b"truncated")
    with pytest.raises(StaleEngineError, match="unet.engine is 9 bytes"):
        cache.lookup(spec(), ADA)
    (folder / "vae_decoder.engine").unlink()
    with pytest.raises(StaleEngineError, match="vae_decoder.engine is missing"):
        cache.find("stabilityai/sd-turbo", ADA, width=512, height=512)

    folder = fake_build(cache, spec(model_id="other/model"), ADA)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["spec"]["max_unet_batch"] = 64  # hand-edited to claim a wider range
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleEngineError, match="edited or corrupted"):
        cache.find("other/model", ADA, width=512, height=512, unet_batch=32)


def test_an_interrupted_build_is_never_used_and_clear_removes_it(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    good = fake_build(cache, spec(), ADA)
    partial = cache.folder(spec(model_id="x/y"), ADA)
    partial.mkdir()
    (partial / "unet.engine").write_bytes(b"half")
    (tmp_path / "broken--0").mkdir()
    (tmp_path / "broken--0" / "manifest.json").write_text("{not json")
    entries = {e.path.name: e for e in cache.entries()}
    assert entries[partial.name].manifest is None and "interrupted" in (entries[partial.name].error or "")
    assert "unreadable manifest" in (entries["broken--0"].error or "")
    with pytest.raises(EngineCacheError):
        cache.find("x/y", ADA, width=512, height=512)
    removed = cache.clear(stale_only=True, env=ADA)
    assert sorted(removed) == sorted([partial, tmp_path / "broken--0"])
    assert good.is_dir()


def test_clear_by_model_by_staleness_and_all(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    ada = fake_build(cache, spec(), ADA)
    old = fake_build(cache, spec(), ADA_OLD_TRT)
    other = fake_build(cache, spec(model_id="Lykon/dreamshaper-8"), ADA)
    assert len({ada, old, other}) == 3  # one folder per key
    assert cache.clear(stale_only=True, env=ADA) == [old]
    assert cache.clear(model_id="Lykon/dreamshaper-8") == [other]
    assert cache.clear() == [ada]
    assert cache.entries() == []


def test_weights_fingerprint_follows_the_weights(tmp_path: Path) -> None:
    unet, vae = tmp_path / "unet", tmp_path / "taesd"
    unet.mkdir()
    vae.mkdir()
    (unet / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * (3 << 20))
    (unet / "config.json").write_text("{}")
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"v" * 100)
    first = weights_fingerprint(unet, vae)
    assert first == weights_fingerprint(unet, vae)
    (unet / "config.json").write_text('{"changed": 1}')  # configs are not weights
    assert weights_fingerprint(unet, vae) == first
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"w" * 100)
    second = weights_fingerprint(unet, vae)
    assert second != first
    data = bytearray((unet / "diffusion_pytorch_model.safetensors").read_bytes())
    data[-10] = 1  # the tail of a large file
    (unet / "diffusion_pytorch_model.safetensors").write_bytes(bytes(data))
    assert weights_fingerprint(unet, vae) != second
    with pytest.raises(EngineCacheError, match="no weight files"):
        weights_fingerprint(tmp_path / "missing")


def test_build_engines_reuses_rebuilds_and_writes_the_manifest_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`build_engines`' cache logic with the TensorRT build and ONNX export faked."""
    from pipelines.engines import build, onnx_export

    built: list[str] = []

    def fake_export(model_id: str, out: Path, **kwargs: Any) -> list[onnx_export.ExportResult]:
        out.mkdir(parents=True, exist_ok=True)
        return [onnx_export.ExportResult(n, out / f"{n}.onnx", 10_000_000, 0.1, False, {"b1": 1e-5}) for n in build.ENGINE_NAMES]

    def fake_engine(onnx_path: Path, engine_path: Path, profile: Any, **kwargs: Any) -> float:
        assert not (engine_path.parent / "manifest.json").exists()  # the manifest comes last
        # One timing cache per TensorRT version and GPU architecture, shared by builds.
        assert kwargs["timing_cache"].parent == tmp_path and kwargs["timing_cache"].name.endswith("-sm89.cache")
        engine_path.write_bytes(b"engine")
        built.append(engine_path.name)
        return 1.0

    monkeypatch.setattr(onnx_export, "export_model", fake_export)
    monkeypatch.setattr(build, "build_engine", fake_engine)
    cache = EngineCache(tmp_path)
    lines: list[str] = []
    folder = build.build_engines(spec(), cache, env=ADA, progress=False, report=lines.append)
    assert built == ["unet.engine", "vae_encoder.engine", "vae_decoder.engine"]
    assert any("estimated" in line for line in lines)
    assert cache.lookup(spec(), ADA) == folder
    built.clear()
    assert build.build_engines(spec(), cache, env=ADA, report=lines.append) == folder and built == []  # reused
    # Another TensorRT: a new folder (the old one stays until `engines clear --stale`).
    assert build.build_engines(spec(), cache, env=ADA_OLD_TRT, report=lines.append) != folder and len(built) == 3
    # A damaged build of the same key is rebuilt, saying why.
    built.clear()
    (folder / "unet.engine").write_bytes(b"x")
    assert build.build_engines(spec(), cache, env=ADA, report=lines.append) == folder and len(built) == 3
    assert any(line.startswith("rebuilding:") for line in lines)


def test_build_time_estimate() -> None:
    from pipelines.engines.build import estimate_build_seconds

    cold = estimate_build_seconds({"unet": 3_400_000_000, "vae_decoder": 10_000_000}, wide=True, timing_cache=False)
    warm = estimate_build_seconds({"unet": 3_400_000_000, "vae_decoder": 10_000_000}, wide=True, timing_cache=True)
    assert cold["unet"] > cold["vae_decoder"] > 0 and warm["unet"] < cold["unet"]


def test_prepare_builds_the_pipeline_default_models_engines_where_tensorrt_is(
    tiny_streamdiffusion_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`PREPARE_MODELS=1` with TensorRT and a GPU (faked): the spec it builds from the env."""
    from pipelines.engines import build
    from pipelines.live import tensorrt_backend

    monkeypatch.setattr(tensorrt_backend, "tensorrt_available", lambda: None)
    monkeypatch.setattr(Environment, "current", classmethod(lambda cls, device=0: ADA))
    seen: dict[str, Any] = {}

    def fake_build_engines(s: Any, cache: EngineCache, **kwargs: Any) -> Path:
        seen.update(spec=s, root=cache.root, env=kwargs["env"])
        return tmp_path

    monkeypatch.setattr(build, "build_engines", fake_build_engines)
    environ = {
        "ENGINE_MODEL_ID": str(tiny_streamdiffusion_dir),
        "ENGINE_SIZES": "512x512,768x432",
        "ENGINE_MAX_STREAMS": "4",
        "ENGINE_ROWS_PER_STREAM": "3",
        "ENGINE_DIR": str(tmp_path / "eng"),
    }
    assert build.prepare_engines("streamdiffusion", None, environ=environ, report=lambda _: None) == tmp_path
    s = seen["spec"]
    assert s.model_id == str(tiny_streamdiffusion_dir) and s.vae == "taesd" and len(s.weights_hash) == 32
    assert s.sizes == ((512, 512), (768, 432)) and (s.max_unet_batch, s.opt_unet_batch, s.max_vae_batch) == (12, 3, 4)
    assert seen["root"] == tmp_path / "eng" and seen["env"] == ADA
