"""Build the streamdiffusion TensorRT engines (UNet, VAE encoder, VAE decoder) into the cache.

`build_engines(spec, cache)`: export the ONNX graphs (`onnx_export`), then for each graph parse
it with TensorRT's ONNX parser (from the file, so external weights load), add one
optimization profile spanning the spec's sizes and batch range (opt: the first size and
`opt_unet_batch`), build FP16 with the shared timing cache, and write the manifest last.
Progress goes to a tqdm bar fed by TensorRT's `IProgressMonitor` (TensorRT >= 10), with an
estimate of the build time up front.

Written against the TensorRT 10 API; it cannot run here (no TensorRT on these machines, see
docs/tensorrt.md), so tests/engines runs it only where `tensorrt` imports.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .cache import ENGINE_NAMES, EngineCache, EngineSpec, Environment, ShapeRange, StaleEngineError

__all__ = [
    "build_engine",
    "build_engines",
    "estimate_build_seconds",
    "prepare_engines",
    "spec_for_model",
]

log = logging.getLogger(__name__)

#: Rough FP16 build seconds per GB of fp32 ONNX weights for one dynamic profile on an
#: RTX 4090/H100 class GPU without a timing cache (unmeasured here: see docs/tensorrt.md),
#: and the share a warm timing cache saves.
SECONDS_PER_GB = 150.0
MIN_SECONDS = 20.0
TIMING_CACHE_SPEEDUP = 0.4


def estimate_build_seconds(onnx_bytes: dict[str, int], *, wide: bool, timing_cache: bool) -> dict[str, float]:
    """Estimated build seconds per engine. `wide`: the profile spans several sizes/batches."""
    factor = (1.5 if wide else 1.0) * (TIMING_CACHE_SPEEDUP if timing_cache else 1.0)
    return {name: max(MIN_SECONDS, SECONDS_PER_GB * size / 1e9) * factor for name, size in onnx_bytes.items()}


def spec_for_model(
    model_id: str,
    *,
    model_dir: Path | None = None,
    vae: str = "taesd",
    vae_id: str | None = None,
    sizes: tuple[tuple[int, int], ...] = ((512, 512),),
    max_streams: int = 1,
    rows_per_stream: int = 4,
    text_len: int = 77,
) -> EngineSpec:
    """The spec of a build: UNet batch 1..max_streams*rows_per_stream (opt: one stream), VAE
    batch 1..max_streams; the weights hash covers the UNet and the chosen VAE."""
    from ..live.streamdiffusion_folders import component_folders
    from .cache import weights_fingerprint

    unet_dir, vae_dir, kind = component_folders(model_id, model_dir, tiny_vae=vae == "taesd", vae_id=vae_id)
    return EngineSpec(
        model_id=model_id,
        weights_hash=weights_fingerprint(unet_dir, vae_dir),
        vae=kind,
        sizes=sizes,
        max_unet_batch=max_streams * rows_per_stream,
        opt_unet_batch=rows_per_stream,
        max_vae_batch=max_streams,
        text_len=text_len,
    )


def _progress_monitor(label: str) -> Any:
    """A `trt.IProgressMonitor` drawing one tqdm bar per build phase TensorRT reports."""
    import tensorrt as trt
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc]  # tensorrt is not followed (mypy config): Any
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.bars[phase_name] = tqdm(
                total=num_steps, desc=f"{label}: {phase_name}", leave=parent_phase is None, position=len(self.bars)
            )

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.n = step + 1
                bar.refresh()
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Monitor()


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profile: Mapping[str, ShapeRange],
    *,
    timing_cache: Path | None = None,
    fp16: bool = True,
    workspace_bytes: int | None = None,
    progress: bool = True,
) -> float:
    """Build one engine (TensorRT 10 API); returns the seconds it took."""
    import tensorrt as trt

    started = time.monotonic()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            # Weakly typed FP16 builds are deprecated in TensorRT 10 and may go in a later major;
            # a strongly typed build needs an FP16 ONNX export, not written yet.
            raise RuntimeError(f"TensorRT {trt.__version__} has no BuilderFlag.FP16; use TensorRT 10.x")
        config.set_flag(trt.BuilderFlag.FP16)
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        low, opt, high = profile[tensor.name]
        static = tuple(int(d) for d in tensor.shape)
        # -1 in a profile (the text width) means "the graph's static size".
        low, opt, high = (tuple(static[k] if d == -1 else d for k, d in enumerate(dims)) for dims in (low, opt, high))
        opt_profile.set_shape(tensor.name, low, opt, high)
    config.add_optimization_profile(opt_profile)
    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    if progress and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(engine_path.stem)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {engine_path.name} (see the TensorRT log above)")
    engine_path.write_bytes(memoryview(serialized))
    if cache is not None and timing_cache is not None:
        timing_cache.write_bytes(memoryview(cache.serialize()))
    return time.monotonic() - started


def build_engines(
    spec: EngineSpec,
    cache: EngineCache,
    *,
    env: Environment | None = None,
    model_dir: Path | None = None,
    vae_id: str | None = None,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] = print,
) -> Path:
    """Export and build the three engines of `spec` into `cache`; returns the folder.

    An existing valid build of the same key is reused unless `force`; one that fails its
    checks is rebuilt.
    """
    from .onnx_export import export_model

    env = env or Environment.current()
    try:
        found = cache.lookup(spec, env)
    except StaleEngineError as exc:
        report(f"rebuilding: {exc}")
        found = None
    if found is not None and not force:
        report(f"engines for {spec.model_id} already built: {found}")
        return found
    folder = cache.folder(spec, env)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.monotonic()
    report(f"exporting ONNX for {spec.model_id} ({spec.vae} VAE) to {folder / 'onnx'}")
    results = export_model(
        spec.model_id,
        folder / "onnx",
        model_dir=model_dir,
        tiny_vae=spec.vae == "taesd",
        vae_id=vae_id,
        # The parity check needs onnxruntime (the dev extra); the GPU image may not have it.
        check_batches=(1,) if importlib.util.find_spec("onnxruntime") else (),
        check_sizes=(spec.opt_size,),
        report=report,
    )
    timing = cache.timing_cache(env)
    wide = len(set(spec.sizes)) > 1 or spec.max_unet_batch > spec.opt_unet_batch
    estimate = estimate_build_seconds({r.name: r.bytes for r in results}, wide=wide, timing_cache=timing.is_file())
    report(
        f"building {len(ENGINE_NAMES)} FP16 engines on {env.gpu_name} (TensorRT {env.tensorrt}); "
        f"estimated {sum(estimate.values()) / 60:.1f} min"
    )
    for name in ENGINE_NAMES:
        seconds = build_engine(
            folder / "onnx" / f"{name}.onnx", folder / f"{name}.engine", spec.profile(name), timing_cache=timing, progress=progress
        )
        report(f"  {name}.engine: {seconds:.0f} s (estimated {estimate[name]:.0f} s)")
    cache.write_manifest(
        folder,
        spec,
        env,
        build_seconds=time.monotonic() - started,
        extra={"onnx_max_abs_diff": {r.name: r.worst for r in results if r.max_abs_diff}},
    )
    report(f"engines for {spec.model_id} written to {folder}")
    return folder


def prepare_engines(
    pipeline: str,
    model_dir: Path | None,
    *,
    report: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
) -> Path | None:
    """`PREPARE_MODELS=1` / `livestream prepare` for a streamdiffusion live pipeline: build its
    engines where TensorRT and a GPU are present, else say why not and return None.

    The model and VAE are the pipeline's defaults (`ENGINE_MODEL_ID` overrides the model);
    `ENGINE_SIZES` (default 512x512), `ENGINE_MAX_STREAMS` (1) and `ENGINE_ROWS_PER_STREAM` (4)
    set the ranges; `ENGINE_DIR` the cache (default `MODEL_DIR/engines`).
    """
    from ..live import default_live_registry
    from ..live.tensorrt_backend import tensorrt_available
    from .cache import EngineCacheError, default_engine_dir, parse_sizes

    environ = os.environ if environ is None else environ
    missing = tensorrt_available()
    if missing:
        report(f"{pipeline}: no TensorRT engines built: {missing}")
        return None
    try:
        env = Environment.current()
    except EngineCacheError as exc:
        report(f"{pipeline}: no TensorRT engines built: {exc}")
        return None
    params = default_live_registry(model_dir).get(pipeline).params_model()
    model_id = environ.get("ENGINE_MODEL_ID") or str(params.model_id)  # type: ignore[attr-defined]
    use_tiny = bool(getattr(params, "use_tiny_vae", True))
    vae_id = getattr(params, "vae_id", None)
    spec = spec_for_model(
        model_id,
        model_dir=model_dir,
        vae="taesd" if use_tiny else "kl",
        vae_id=vae_id,
        sizes=parse_sizes(environ.get("ENGINE_SIZES") or "512x512"),
        max_streams=int(environ.get("ENGINE_MAX_STREAMS") or 1),
        rows_per_stream=int(environ.get("ENGINE_ROWS_PER_STREAM") or 4),
    )
    cache = EngineCache(default_engine_dir(model_dir, environ))
    return build_engines(spec, cache, env=env, model_dir=model_dir, vae_id=vae_id, report=report)
