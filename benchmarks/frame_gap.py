"""Frame gap: does a starting stream stall the streams already running on the same model?

Stream A (`StreamDiffusionPipeline`, its own thread calling `process` frame after frame, as
a session's pipeline thread does) runs alone for `--lead` seconds; then stream B loads on
the same `WorkerPool` (the same model, so the same GPU worker) at another frame size: B's
`load` joins the worker, applies its params and warms up (for `compile`, compiles ahead for
the new size). A's frame gaps (time between two of its outputs) are recorded throughout:

- `gap_ms_alone_p50`: A's median gap before B starts;
- `gap_ms_max_during_start`: A's largest gap while B's `load` runs (the stall, if any);
- `gap_ms_both_p50`: A's median gap once both streams run (one tick now carries both);
- `b_load_ms`: how long B's `load` took.

    .venv/bin/python -m benchmarks frame_gap
    .venv/bin/python benchmarks/frame_gap.py --backends eager,compile --json

`--model tiny` (default) writes the tiny random-weight sd-turbo-family model to a temporary
folder. The compile backend uses `LIVESTREAM_TORCH_COMPILER` (`--compiler`, default
`aot_eager`: Inductor's C++ build takes minutes per graph on a small CPU; the stall it would
cause is the same, only longer) and compiles ahead for `--compile-streams` stream counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["main"]


def _frames(count: int, size: int, seed: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, size, size, 3), generator=gen, dtype=torch.uint8)


def _run(args: argparse.Namespace, model: str, backend: str) -> dict[str, Any]:
    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    acceleration: Literal["none", "compile"] = "compile" if backend == "compile" else "none"
    pool = WorkerPool(compile_streams=tuple(args.compile_streams))

    def params(size: int, seed: int) -> StreamDiffusionParams:
        return StreamDiffusionParams(
            model_id=model,
            prompt=f"stream {seed}",
            seed=seed,
            t_index_list=[20, 35],
            cfg_type="self",
            guidance_scale=1.4,
            width=size,
            height=size,
            acceleration=acceleration,
        )

    a = StreamDiffusionPipeline(device="cpu", pool=pool)
    a.load(params(args.size, 1))
    frames_a = _frames(16, args.size, 1)
    frames_b = _frames(16, args.second_size, 2)
    done_at: list[float] = []
    stop = threading.Event()

    def drive_a() -> None:
        i = 0
        while not stop.is_set():
            a.process(frames_a[i % len(frames_a)][None])
            done_at.append(time.monotonic())
            i += 1

    thread = threading.Thread(target=drive_a, name="frame-gap-a")
    thread.start()
    b = StreamDiffusionPipeline(device="cpu", pool=pool)
    try:
        time.sleep(args.lead)
        b_start = time.monotonic()
        b.load(params(args.second_size, 2))
        b_end = time.monotonic()
        both_from = time.monotonic()
        while time.monotonic() - both_from < args.tail:
            b.process(frames_b[0][None])
    finally:
        stop.set()
        thread.join(60)
        b.close()
        a.close()
        pool.close()
    stamps = list(done_at)
    gaps = [(t1, (t1 - t0) * 1000) for t0, t1 in zip(stamps, stamps[1:], strict=False)]
    alone = [g for t, g in gaps if t < b_start]
    during = [g for t, g in gaps if b_start <= t <= b_end] or [0.0]
    # The gap that spans B's end counts too (A's first frame after the stall).
    after = [g for t, g in gaps if t > b_end]
    if after:
        during.append(after[0])
    both = [g for t, g in gaps if t > both_from]
    return {
        "backend": backend,
        "size": args.size,
        "second_size": args.second_size,
        "gap_ms_alone_p50": round(statistics.median(alone), 1) if alone else None,
        "gap_ms_max_during_start": round(max(during), 1),
        "gap_ms_both_p50": round(statistics.median(both), 1) if both else None,
        "b_load_ms": round((b_end - b_start) * 1000, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (random weights, written to a temp folder) or a folder")
    parser.add_argument("--backends", default="eager,compile")
    parser.add_argument("--size", type=int, default=64, help="stream A's frame size")
    parser.add_argument("--second-size", type=int, default=96, help="stream B's frame size (a new size: warm-up)")
    parser.add_argument("--lead", type=float, default=1.5, help="seconds A runs alone first")
    parser.add_argument("--tail", type=float, default=1.0, help="seconds both run after B started")
    parser.add_argument("--compiler", default="aot_eager", help="LIVESTREAM_TORCH_COMPILER for the compile backend")
    parser.add_argument("--compile-streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else [])
    os.environ.setdefault("LIVESTREAM_TORCH_COMPILER", args.compiler)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model == "tiny":
            from pipelines.testing import write_tiny_model

            model = str(Path(tmp) / "tiny-streamdiffusion")
            write_tiny_model("streamdiffusion", Path(model))
        for backend in args.backends.split(","):
            results.append(_run(args, model, backend))
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch_threads": args.threads, "results": results}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{'backend':8} {'A size':>6} {'B size':>6} {'alone p50':>10} {'max during B start':>19} {'both p50':>9} {'B load':>8}")
    for r in results:
        print(
            f"{r['backend']:8} {r['size']:>6} {r['second_size']:>6} {r['gap_ms_alone_p50']:>8} ms"
            f" {r['gap_ms_max_during_start']:>16} ms {r['gap_ms_both_p50']:>6} ms {r['b_load_ms']:>5} ms"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(sys.argv[1:])
