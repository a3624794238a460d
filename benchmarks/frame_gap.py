"""Frame gap: does a starting stream stall the streams already running on the same model?

Stream A (`StreamDiffusionPipeline`, its own thread calling `process` frame after frame, as
a session's pipeline thread does) runs alone for `--lead` seconds; then stream B loads on
the same `WorkerPool` (the same model, so the same GPU worker) at another frame size: B's
`load` joins the worker, applies its params and warms up (for `compile`, compiles ahead for
the new size). A's frame gaps (time between two of its outputs) are recorded throughout:

- `gap_ms_alone_p50`: A's median gap before B starts;
- `gap_ms_max_during_start`: A's largest gap while B's `load` runs (the stall, if any);
- `gap_ms_both_p50`: A's median gap once both streams run (one tick now carries both);
- `b_load_ms`: how long B's `load` took;
- `a_error`: what stopped A, if something did (a frame past `--frame-timeout`).

    .venv/bin/python -m benchmarks frame_gap
    .venv/bin/python benchmarks/frame_gap.py --backends eager,compile --json

`--backends` (each one a run with its own pool and, for Inductor, an empty Inductor cache):

- `eager`: no compile; B's start is its warm-up frames;
- `compile`: `torch.compile` with the dynamo backend `--compiler` (default `aot_eager`: no
  code generation, and no on-disk cache) compiled on B's thread;
- `inductor`: `torch.compile` with Inductor, compiled on B's thread (`precompile` off): the
  GIL convoy;
- `inductor-child`: the same, with the engine's default `precompile`: a child process compiles
  first into Inductor's cache (`pipelines.live.precompile`), B's thread then loads from it.

The Inductor runs start from a copy of one cache holding stream A's size only (compiled once
before the runs), so B's size is a cold compile in each. The compile backends compile ahead
for `--compile-streams` stream counts. `--model tiny`
(default) writes the tiny random-weight sd-turbo-family model to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def _run(args: argparse.Namespace, model: str, backend: str, cache_dir: Path, seed: Path | None) -> dict[str, Any]:
    import torch
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    torch._dynamo.reset()
    compiler = {"compile": args.compiler, "inductor": "inductor", "inductor-child": "inductor"}.get(backend)
    if compiler is not None:
        os.environ["LIVESTREAM_TORCH_COMPILER"] = compiler
    if seed is not None and compiler == "inductor":
        shutil.copytree(seed, cache_dir)  # A's graphs only: B's size is not in it
    else:
        cache_dir.mkdir(parents=True)
    with temporary_cache_dir(str(cache_dir)):  # each run starts without B's graphs
        return _measure(args, model, backend, compiler is not None)


def _seed_inductor_cache(args: argparse.Namespace, model: str, cache_dir: Path) -> None:
    """Compile stream A's size once into `cache_dir` (each Inductor run starts from a copy)."""
    import torch
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline

    torch._dynamo.reset()
    os.environ["LIVESTREAM_TORCH_COMPILER"] = "inductor"
    cache_dir.mkdir(parents=True)
    pool = WorkerPool(compile_streams=tuple(args.compile_streams), precompile=False)
    pipe = StreamDiffusionPipeline(device="cpu", pool=pool)
    with temporary_cache_dir(str(cache_dir)):
        try:
            pipe.load(_params(model, args.size, 1, "compile"))
        finally:
            pipe.close()
            pool.close()


def _params(model: str, size: int, seed: int, acceleration: Literal["none", "compile"]) -> Any:
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

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


def _measure(args: argparse.Namespace, model: str, backend: str, compiled: bool) -> dict[str, Any]:
    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline

    acceleration: Literal["none", "compile"] = "compile" if compiled else "none"
    pool = WorkerPool(
        compile_streams=tuple(args.compile_streams),
        precompile=backend == "inductor-child",
        frame_timeout_s=args.frame_timeout,
        call_timeout_s=args.frame_timeout,
    )

    def params(size: int, seed: int) -> Any:
        return _params(model, size, seed, acceleration)

    a = StreamDiffusionPipeline(device="cpu", pool=pool)
    a.load(params(args.size, 1))
    frames_a = _frames(16, args.size, 1)
    frames_b = _frames(16, args.second_size, 2)
    done_at: list[float] = []
    stop = threading.Event()
    a_error: list[str] = []

    def drive_a() -> None:
        i = 0
        try:
            while not stop.is_set():
                a.process(frames_a[i % len(frames_a)][None])
                done_at.append(time.monotonic())
                i += 1
        except Exception as exc:  # reported in the row
            a_error.append(f"{type(exc).__name__}: {exc}")
            done_at.append(time.monotonic())

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
        thread.join(args.frame_timeout + 60)
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
        "b_precompile_ms": None if b.precompile_ms is None else round(b.precompile_ms, 1),
        "b_compile_cache": b.compile_cache,
        "a_error": a_error[0] if a_error else None,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (random weights, written to a temp folder) or a folder")
    parser.add_argument("--backends", default="eager,compile,inductor,inductor-child")
    parser.add_argument("--size", type=int, default=64, help="stream A's frame size")
    parser.add_argument("--second-size", type=int, default=96, help="stream B's frame size (a new size: warm-up)")
    parser.add_argument("--lead", type=float, default=1.5, help="seconds A runs alone first")
    parser.add_argument("--tail", type=float, default=1.0, help="seconds both run after B started")
    parser.add_argument("--compiler", default="aot_eager", help="LIVESTREAM_TORCH_COMPILER for the compile backend")
    parser.add_argument("--compile-streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--frame-timeout", type=float, default=900.0, help="the pool's frame/call bound (a stall is measured, not failed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else [])
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
        backends = args.backends.split(",")
        seed = Path(tmp) / "inductor-seed" if any(b.startswith("inductor") for b in backends) else None
        if seed is not None:
            _seed_inductor_cache(args, model, seed)
        for i, backend in enumerate(backends):
            results.append(_run(args, model, backend, Path(tmp) / f"inductor-cache-{i}", seed))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # a row as soon as it is measured
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "torch_threads": args.threads,
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{'backend':15} {'A size':>6} {'B size':>6} {'alone p50':>10} {'max during B start':>19} {'both p50':>9} {'B load':>8}")
    for r in results:
        print(
            f"{r['backend']:15} {r['size']:>6} {r['second_size']:>6} {r['gap_ms_alone_p50']:>8} ms"
            f" {r['gap_ms_max_during_start']:>16} ms {r['gap_ms_both_p50']:>6} ms {r['b_load_ms']:>5} ms"
            + (f"  (A stopped: {r['a_error']})" if r["a_error"] else "")
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(sys.argv[1:])
