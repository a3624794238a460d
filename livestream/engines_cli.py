"""`livestream engines list|build|clear|export-onnx`: the streamdiffusion TensorRT engine cache.

See docs/tensorrt.md. `export-onnx` runs anywhere (CPU); `build` needs TensorRT and an NVIDIA
GPU; `list` and `clear` read the cache and check it against this machine's TensorRT and GPU
when they are there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["ROWS_PER_STREAM", "add_engines_parser"]

#: `pipelines.live.streamdiffusion_params.MAX_DENOISING_STEPS` (not imported: the CLI parser
#: stays light).
ROWS_PER_STREAM = 4


def add_engines_parser(commands: Any, model_dir: Path | None) -> None:
    """Add the `engines` command group to the CLI's subparsers."""
    engines = commands.add_parser(
        "engines",
        help="TensorRT engines for streamdiffusion: list, build, clear, export ONNX",
        description="TensorRT engines for the streamdiffusion live pipeline (docs/tensorrt.md).",
    )
    sub = engines.add_subparsers(dest="engines_command", metavar="SUBCOMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-dir", type=Path, default=model_dir, help="local models and the HF cache (env MODEL_DIR)")
    common.add_argument("--engine-dir", type=Path, help="engine cache (env ENGINE_DIR, else MODEL_DIR/engines, else ./engines)")

    export = sub.add_parser(
        "export-onnx",
        parents=[common],
        help="export the UNet and VAE encoder/decoder to ONNX and check them against PyTorch (CPU)",
    )
    export.add_argument("--model-id", required=True, help="model folder or Hugging Face id (SD 1.5/2.1/sd-turbo layout)")
    export.add_argument("--out", required=True, type=Path, help="folder for unet.onnx, vae_encoder.onnx, vae_decoder.onnx")
    export.add_argument("--vae", choices=("auto", "taesd", "kl"), default="auto", help="auto: the folder's taesd/ if any")
    export.add_argument("--vae-id", help="tiny VAE folder or id (default: the model's taesd/, else madebyollin/taesd)")
    export.add_argument("--check-sizes", default="64x64,96x72", help="WxH list for the parity check (default 64x64,96x72)")
    export.add_argument("--check-batches", default="1,3", help="batch sizes for the parity check (default 1,3)")
    export.add_argument("--external-data", action="store_true", help="weights in <name>.onnx.data (automatic above 2 GB)")
    export.set_defaults(handler=_export)

    build = sub.add_parser("build", parents=[common], help="build FP16 engines (needs TensorRT and an NVIDIA GPU)")
    build.add_argument("--model-id", required=True, help="model folder or Hugging Face id")
    build.add_argument("--sizes", default="512x512", help="WxH list the engines must cover; the first is the optimum")
    build.add_argument("--max-streams", type=int, default=1, help="streams batched into one UNet call (default 1)")
    build.add_argument(
        "--rows-per-stream",
        type=int,
        default=ROWS_PER_STREAM,
        help="UNet rows per stream: len(t_index_list), x2 for cfg_type full, +1 for initialize "
        f"(default {ROWS_PER_STREAM}, the longest t_index_list)",
    )
    build.add_argument("--vae", choices=("taesd", "kl"), default="taesd", help="which VAE the engines use (default taesd)")
    build.add_argument("--vae-id", help="tiny VAE folder or id (default: the model's taesd/, else madebyollin/taesd)")
    build.add_argument("--force", action="store_true", help="rebuild even when valid engines exist")
    build.set_defaults(handler=_build)

    listing = sub.add_parser("list", parents=[common], help="engines in the cache and whether they fit this machine")
    listing.set_defaults(handler=_list)

    clear = sub.add_parser("clear", parents=[common], help="remove engines (all, one model's, or only stale ones)")
    clear.add_argument("--model-id", help="only this model's engines")
    clear.add_argument("--stale", action="store_true", help="only engines that cannot be used on this machine")
    clear.set_defaults(handler=_clear)


def _engine_dir(args: argparse.Namespace) -> Path:
    from pipelines.engines.cache import default_engine_dir

    return args.engine_dir or default_engine_dir(args.model_dir)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip())


def _export(args: argparse.Namespace) -> int:
    from pipelines.engines.cache import parse_sizes
    from pipelines.engines.onnx_export import export_model

    tiny = {"auto": None, "taesd": True, "kl": False}[args.vae]
    print(f"exporting {args.model_id} to {args.out} (onnxruntime parity check on the CPU)")
    results = export_model(
        args.model_id,
        args.out,
        model_dir=args.model_dir,
        tiny_vae=tiny,
        vae_id=args.vae_id,
        check_sizes=parse_sizes(args.check_sizes) if args.check_sizes else (),
        check_batches=_ints(args.check_batches),
        external_data=True if args.external_data else None,
        report=print,
    )
    for r in results:
        print(f"max abs diff {r.name}: {r.worst:.3e}")
    return 0


def _environment() -> Any:
    """This machine's TensorRT/GPU, or None where TensorRT or the GPU is missing."""
    from pipelines.engines.cache import EngineCacheError, Environment
    from pipelines.live.tensorrt_backend import tensorrt_available

    if tensorrt_available() is not None:
        return None
    try:
        return Environment.current()
    except EngineCacheError:
        return None


def _build(args: argparse.Namespace) -> int:
    from pipelines.engines.build import build_engines, spec_for_model
    from pipelines.engines.cache import EngineCache, parse_sizes
    from pipelines.live.tensorrt_backend import tensorrt_available

    missing = tensorrt_available()
    if missing:
        print(f"livestream engines build: {missing}. Build engines in the Docker image (docs/tensorrt.md).")
        return 1
    spec = spec_for_model(
        args.model_id,
        model_dir=args.model_dir,
        vae=args.vae,
        vae_id=args.vae_id,
        sizes=parse_sizes(args.sizes),
        max_streams=args.max_streams,
        rows_per_stream=args.rows_per_stream,
    )
    build_engines(spec, EngineCache(_engine_dir(args)), model_dir=args.model_dir, vae_id=args.vae_id, force=args.force)
    return 0


def _list(args: argparse.Namespace) -> int:
    from pipelines.engines.cache import EngineCache, describe

    cache = EngineCache(_engine_dir(args))
    env = _environment()
    entries = cache.entries()
    where = f"TensorRT {env.tensorrt}, sm{env.compute_capability} {env.gpu_name}" if env else "no TensorRT/GPU here"
    print(f"{cache.root}: {len(entries)} engine folder(s) ({where})")
    for entry in entries:
        row = describe(entry, env)
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def _clear(args: argparse.Namespace) -> int:
    from pipelines.engines.cache import EngineCache

    env = _environment()
    if args.stale and env is None:
        print("note: no TensorRT/GPU here, so only broken or interrupted builds count as stale")
    removed = EngineCache(_engine_dir(args)).clear(model_id=args.model_id, stale_only=args.stale, env=env)
    for path in removed:
        print(f"removed {path}")
    print(f"removed {len(removed)} engine folder(s)")
    return 0
