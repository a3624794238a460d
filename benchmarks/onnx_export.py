"""ONNX export of the streamdiffusion UNet and VAE: export time, graph size, parity, and
onnxruntime (CPU) latency against eager PyTorch (CPU) for the same graph and inputs.

This is the CPU half of the TensorRT path (docs/tensorrt.md): what `livestream engines
export-onnx` costs and whether the exported graphs compute what PyTorch does. It is not a
serving benchmark (the GPU backends are in realtime_diffusion).

    .venv/bin/python -m benchmarks onnx_export
    .venv/bin/python benchmarks/onnx_export.py --model-id DIR --sizes 64x64,128x128 --batches 1,4 --json

`--model-id` defaults to the tiny sd-turbo-family model, written to a temporary folder.
Torch and onnxruntime both run with `--threads` intra-op threads (default 1), alternating,
`--repeats` calls each after one warm-up; the table gives the median.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _latency(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(model_id: str, sizes: Sequence[tuple[int, int]], batches: Sequence[int], threads: int, repeats: int) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from pipelines.engines.onnx_export import _inputs, _wrappers, export_model, load_components

    torch.set_num_threads(threads)
    parts = load_components(model_id)
    with tempfile.TemporaryDirectory() as tmp:
        results = export_model(model_id, Path(tmp), parts=parts, check_batches=batches, check_sizes=sizes)
        wrappers = _wrappers(parts)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        rows = []
        for r in results:
            session = ort.InferenceSession(str(r.path), options, providers=["CPUExecutionProvider"])
            for batch in batches:
                for w, h in sizes:
                    inputs = _inputs(r.name, parts, batch, w, h)
                    feed = {k: v.numpy() for k, v in inputs.items()}
                    module = wrappers[r.name]

                    def torch_call(module: Any = module, inputs: dict[str, Any] = inputs) -> None:
                        with torch.inference_mode():
                            module(*inputs.values())

                    def ort_call(session: Any = session, feed: dict[str, Any] = feed) -> None:
                        session.run(None, feed)

                    torch_ms = _latency(torch_call, repeats)
                    ort_ms = _latency(ort_call, repeats)
                    rows.append(
                        {
                            "graph": r.name,
                            "batch": batch,
                            "size": f"{w}x{h}",
                            "torch_ms": round(torch_ms, 2),
                            "onnxruntime_ms": round(ort_ms, 2),
                            "max_abs_diff": r.max_abs_diff[f"b{batch} {w}x{h}"],
                        }
                    )
        exports = [
            {"graph": r.name, "export_s": round(r.seconds, 2), "mb": round(r.bytes / 1e6, 2), "max_abs_diff": r.worst}
            for r in results
        ]
    return {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, Python {platform.python_version()}",
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "threads": threads,
        "exports": exports,
        "latency": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    from pipelines.engines.cache import parse_sizes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", help="model folder or id (default: the tiny model, written to a temp folder)")
    parser.add_argument("--sizes", default="64x64,128x128")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else [])
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_id = args.model_id
        if model_id is None:
            from pipelines.testing.streamdiffusion import write_tiny_streamdiffusion

            model_id = str(Path(tmp) / "tiny")
            write_tiny_streamdiffusion(Path(model_id))
        report = run(model_id, parse_sizes(args.sizes), batches, args.threads, args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['machine']}; torch {report['torch']}, onnxruntime {report['onnxruntime']}, {report['threads']} thread(s)")
    print("| graph | export s | MB | max abs diff |")
    print("|---|---|---|---|")
    for e in report["exports"]:
        print(f"| {e['graph']} | {e['export_s']} | {e['mb']} | {e['max_abs_diff']:.1e} |")
    print()
    print("| graph | batch | size | torch ms | onnxruntime ms | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in report["latency"]:
        print(
            f"| {r['graph']} | {r['batch']} | {r['size']} | {r['torch_ms']} | {r['onnxruntime_ms']} | {r['max_abs_diff']:.1e} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
