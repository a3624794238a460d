"""Real-time diffusion: fps and per-frame latency of the `streamdiffusion` live pipeline.

One row per (backend, stream count), all in one run on the same model, size and frames:
N sessions (`StreamDiffusionPipeline`s, each its own prompt and seed) share one GPU worker
(`pipelines.live.diffusion_worker`) and each is driven by its own thread calling `process`
frame after frame, as the live engine's session threads do; the worker batches their newest
frames into one VAE encode, one UNet call and one VAE decode per tick. Backends: `eager`
(PyTorch) and `compile` (`torch.compile`, Inductor; compiled ahead for the row's stream
count and fewer, outside the timing: `compile_s` in the table). Each row has a worker of its
own. Latency is one frame's `process` call
(submit to output, waiting for the tick included); aggregate fps is all streams' frames over
the wall time, per-stream fps that over N. The stream batch's output also lags its input by
`len(t_index_list) - 1` frames. Rows run in rounds, in turn, so a shared machine's load hits
them alike.

    .venv/bin/python -m benchmarks realtime_diffusion
    .venv/bin/python benchmarks/realtime_diffusion.py --streams 1,4 --json

`--json` prints one object: `{"device", "model", "results": [{"streams", "backend",
"aggregate_fps", "per_stream_fps", "latency_ms_p50", "latency_ms_p99"}, ...]}` (and
`controlnets` per row with `--controlnets 0,1,2`: that many tiny ControlNets per stream, with
the canny, soft_edge and blur preprocessors, preprocessing included in the timing).
`--preprocessors models` gives those ControlNets the model-backed preprocessors instead (depth
(Depth Anything V2), openpose (ViTPose on RT-DETR person boxes) and lineart (the
informative-drawings generator), tiny random-weight models); `--batching on,off` adds, for each
such row, one with depth and pose run per stream inside its `begin` (as before
`preprocessor_batch`) beside the batched one (one model call per worker tick for all streams):
the row's `mode` says `batched` or `per-stream`.
`--baselines` adds part 1's single-stream reference rows (sequential steps, full CFG,
diffusers' img2img per frame; eager).

`--model tiny` (default) writes the tiny sd-turbo-family model to a temporary folder
(`--model tiny-sdxl`: the tiny sdxl-turbo-family one, same UNet blocks plus SDXL's added
embeddings and a second text encoder);
`--model sd-turbo-arch` writes sd-turbo's real architecture with random weights (float16,
about 2.6 GB; for a GPU: `--device cuda --size 512`); a path or Hugging Face id loads that
model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

PROMPT = "a watercolour painting of a city at night"


def _frames(count: int, size: int, seed: int = 0) -> Any:
    """`(count, size, size, 3)` uint8 frames: a moving gradient with noise (a camera-like input)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 255, size)
    frames = []
    for i in range(count):
        base = ((ramp.view(1, size, 1) + 4 * i) % 256).expand(size, size, 3)
        frames.append((base * 0.8 + torch.randint(0, 50, (size, size, 3), generator=gen)).clamp(0, 255))
    return torch.stack(frames).to(torch.uint8)


def _summary(latencies: Sequence[float], wall: float, frames: int, streams: int) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "aggregate_fps": round(frames * streams / wall, 2),
        "per_stream_fps": round(frames / wall, 2),
        "latency_ms_p50": round(statistics.median(ordered) * 1000, 2),
        "latency_ms_p99": round(p99 * 1000, 2),
    }


class _Row:
    """One benchmark row; `run(indices)` processes those frames (on every stream) and returns
    the per-frame latencies and the wall time; `meta` goes in the table."""

    def __init__(
        self,
        meta: dict[str, Any],
        tick: Callable[[int], None] | None = None,
        streams: int = 1,
        run: Callable[[Sequence[int]], tuple[list[float], float]] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.meta = meta
        self.streams = streams
        self._tick = tick
        self._run = run
        self.close = close or (lambda: None)

    def run(self, indices: Sequence[int]) -> tuple[list[float], float]:
        if self._run is not None:
            return self._run(indices)
        assert self._tick is not None
        latencies = []
        for i in indices:
            t0 = time.perf_counter()
            self._tick(i)
            latencies.append(time.perf_counter() - t0)
        return latencies, sum(latencies)


def _unet_rows(params: Any) -> int:
    """UNet rows per call: the stream batch's n (2n full CFG, n+1 initialize); sequential 1 or 2."""
    n = len(params.t_index_list)
    guided = params.cfg_type != "none" and params.guidance_scale > 1
    if not params.use_denoising_batch:
        return 2 if guided and params.cfg_type == "full" else 1
    if guided and params.cfg_type == "full":
        return 2 * n
    return n + 1 if guided and params.cfg_type == "initialize" else n


def _pipeline_row(args: argparse.Namespace, model: str, frames: Any, label: str, **overrides: Any) -> _Row:
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    params = StreamDiffusionParams(
        model_id=model,
        prompt=PROMPT,
        t_index_list=args.t_index_list,
        cfg_type=overrides.pop("cfg_type", args.cfg_type),
        guidance_scale=args.guidance_scale,
        width=args.size,
        height=args.size,
        **overrides,
    )
    pipe = StreamDiffusionPipeline(device=args.device)
    pipe.load(params)
    status = pipe.status()
    meta = {
        "streams": 1,
        "backend": status["backend"],
        "mode": label,
        "unet_rows": _unet_rows(params),
        "unet_calls_per_frame": 1 if params.use_denoising_batch else len(args.t_index_list),
        "lag_frames": len(args.t_index_list) - 1 if params.use_denoising_batch else 0,
        "load_ms": status["load_ms"],
        "warmup_ms": status["warmup_ms"],
    }

    def tick(i: int) -> None:
        pipe.process(frames[i : i + 1])

    return _Row(meta, tick)


#: The ControlNets a `--controlnets N` row uses, in order: (preprocessor, conditioning_scale).
CONTROLNET_PLAN = [("canny", 0.8), ("soft_edge", 0.5), ("blur", 0.3)]
#: `--preprocessors models`: the model-backed ones, with detect resolutions for 64-pixel frames.
MODEL_PLAN = [("depth", 0.8), ("openpose", 0.5), ("lineart", 0.3)]
MODEL_PARAMS: dict[str, dict[str, Any]] = {"depth": {"detect_resolution": 112}, "lineart": {"detect_resolution": 128}}


def _tiny_aux(root: Path) -> Any:
    """Tiny depth, pose, person-detector and lineart models under `root`, as an `AuxModels`."""
    from pipelines.live.aux_models import AuxModels
    from pipelines.testing import write_tiny_model

    kinds = {"depth": "depth", "pose": "pose", "person_detector": "person-detector", "lineart": "lineart"}
    for task in kinds.values():
        write_tiny_model(task, root / task)
    return AuxModels({kind: str(root / task) for kind, task in kinds.items()})


class _Unbatched:
    """While active, model-backed preprocessors run per stream in `begin` (nothing deferred to
    the tick): `preprocessor_batch.BATCHED` emptied for the row's own run, then restored."""

    def __enter__(self) -> None:
        from pipelines.live import preprocessor_batch

        self.saved = preprocessor_batch.BATCHED
        preprocessor_batch.BATCHED = frozenset()

    def __exit__(self, *exc: object) -> None:
        from pipelines.live import preprocessor_batch

        preprocessor_batch.BATCHED = self.saved


def _worker_row(
    args: argparse.Namespace,
    model: str,
    frames: Any,
    streams: int,
    backend: str,
    controlnets: Sequence[str] = (),
    aux: Any = None,
    batched: bool = True,
) -> _Row:
    """N sessions on one worker (a pool of the row's own, compiled ahead for 1..N streams:
    ticks batch whichever sessions are ready), each driven by a thread of its own."""
    import contextlib
    import threading

    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    pool = WorkerPool(compile_streams=tuple(range(1, streams + 1)))
    pipes = []
    started = time.perf_counter()
    for k in range(streams):
        pipe = StreamDiffusionPipeline(device=args.device, pool=pool, aux=aux)
        plan = MODEL_PLAN if aux is not None else CONTROLNET_PLAN
        params = StreamDiffusionParams(
            model_id=model,
            prompt=f"{PROMPT} {k}",
            seed=k,
            t_index_list=args.t_index_list,
            cfg_type=args.cfg_type,
            guidance_scale=args.guidance_scale,
            width=args.size,
            height=args.size,
            acceleration="compile" if backend == "compile" else "none",
            controlnets=[
                {"model_id": cn, "preprocessor": pre, "conditioning_scale": scale, "preprocessor_params": MODEL_PARAMS.get(pre, {})}
                for cn, (pre, scale) in zip(controlnets, plan, strict=False)
            ],
        )
        pipe.load(params)
        pipes.append(pipe)
    status = pipes[0].status()
    assert status["backend"] == backend, status  # never a silent fallback
    assert "controlnets" not in {w["field"] for w in status["warnings"]}, status["warnings"]  # every preprocessor served
    m = pipes[0]._models
    names = "+".join(pre for pre, _ in plan[: len(controlnets)])
    mode = f"streamdiffusion + {len(controlnets)} ControlNet(s) ({names})" if controlnets else "streamdiffusion"
    if controlnets and aux is not None:
        mode += ", batched" if batched else ", per-stream"
    meta = {
        "streams": streams,
        "backend": backend,
        "controlnets": len(controlnets),
        "preprocessors": names,
        "batched": batched,
        "mode": mode,
        "unet_rows": streams * _unet_rows(params),
        "unet_calls_per_frame": 1,
        "lag_frames": len(args.t_index_list) - 1,
        "load_s": round(time.perf_counter() - started, 1),
        "compile_s": round(getattr(m.backend, "compile_s", 0.0), 1) if m else 0.0,
    }

    def run(indices: Sequence[int]) -> tuple[list[float], float]:
        latencies: list[list[float]] = [[] for _ in pipes]
        errors: list[BaseException] = []

        def drive(k: int) -> None:
            try:
                for i in indices:
                    t0 = time.perf_counter()
                    pipes[k].process(frames[i : i + 1])
                    latencies[k].append(time.perf_counter() - t0)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(k,)) for k in range(streams)]
        with contextlib.nullcontext() if batched else _Unbatched():
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return [x for lat in latencies for x in lat], wall

    def close() -> None:
        for pipe in pipes:
            pipe.close()

    return _Row(meta, streams=streams, run=run, close=close)


def _img2img_row(args: argparse.Namespace, model: str, frames: Any) -> _Row:
    """diffusers' own img2img pipeline per frame: the naive way to restyle a stream."""
    import torch
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionImg2ImgPipeline
    from PIL import Image

    from pipelines.live.streamdiffusion_folders import tiny_vae_id
    from pipelines.loading import pick_device, resolve_model_source, torch_dtype_for

    device = pick_device(args.device)
    dtype = torch_dtype_for(device)
    source = resolve_model_source(model, None)
    tiny = tiny_vae_id(None, source.path)
    vae = AutoencoderTiny.from_pretrained(tiny, dtype=dtype)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        source.pretrained_name, vae=vae, safety_checker=None, feature_extractor=None, requires_safety_checker=False, dtype=dtype
    ).to(device)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    # Same denoising work as the stream batch: len(t_index_list) steps from the first index.
    steps = len(args.t_index_list)
    strength = 1.0 - args.t_index_list[0] / 50
    total = max(steps, math.ceil(steps / strength - 1e-9))
    calls = [0]
    pipe.unet.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def tick(i: int) -> None:
        image = Image.fromarray(frames[i].numpy())
        gen = torch.Generator("cpu").manual_seed(0)
        out = pipe(PROMPT, image=image, num_inference_steps=total, strength=strength, guidance_scale=0.0, generator=gen)
        out.images[0].tobytes()

    tick(0)
    meta = {
        "streams": 1,
        "backend": "diffusers-img2img",
        "mode": "diffusers-img2img",
        "unet_rows": 1,
        "unet_calls_per_frame": calls[0],
        "lag_frames": 0,
    }
    return _Row(meta, tick)


_JSON_KEYS = ("streams", "backend", "aggregate_fps", "per_stream_fps", "latency_ms_p50", "latency_ms_p99")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realtime_diffusion", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="tiny",
        help="'tiny', 'tiny-sdxl' or 'sd-turbo-arch' (random weights, written to a temp folder), a folder or a Hugging Face id",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--size", type=int, default=64, help="frame width and height (multiple of 8)")
    p.add_argument("--frames", type=int, default=40, help="timed frames per stream and row")
    p.add_argument("--rounds", type=int, default=4, help="rows take turns this many times (frames split between them)")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first, per row")
    p.add_argument("--t-index-list", default="20,35", help="comma-separated indices into the 50-step LCM grid")
    p.add_argument("--cfg-type", default="self", choices=["none", "full", "self", "initialize"])
    p.add_argument("--guidance-scale", type=float, default=1.2)
    p.add_argument("--streams", default="1,4", help="comma-separated stream counts, e.g. 1,4")
    p.add_argument("--backend", default="eager,compile", help="comma-separated backends: eager, compile")
    p.add_argument("--baselines", action="store_true", help="add part 1's single-stream reference rows (eager)")
    p.add_argument("--no-baseline", action="store_true", help=argparse.SUPPRESS)  # part 1's flag: now the default
    p.add_argument(
        "--controlnets",
        default="0",
        help="comma-separated ControlNet counts per stream, 0..3 (tiny ControlNets with canny, soft_edge, blur; --model tiny)",
    )
    p.add_argument(
        "--controlnet-ids",
        default="",
        help="comma-separated ControlNet folders or ids for the --controlnets rows instead of the tiny ones "
        "(e.g. a full-size ControlNet for --model sd-turbo-arch)",
    )
    p.add_argument(
        "--preprocessors",
        default="plain",
        choices=["plain", "models"],
        help="the --controlnets rows' preprocessors: plain (canny, soft_edge, blur) or models (depth, openpose, lineart; tiny models)",
    )
    p.add_argument("--batching", default="on", help="with --preprocessors models: on, off or on,off (per-stream preprocessor model calls)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pipelines.live.stream_backends import BACKENDS

    if args.threads:
        torch.set_num_threads(args.threads)
    args.t_index_list = [int(v) for v in str(args.t_index_list).split(",")]
    streams = [int(v) for v in str(args.streams).split(",")]
    backends = [v.strip() for v in str(args.backend).split(",")]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; available: {', '.join(BACKENDS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="rtd-") as tmp:
        model = args.model
        if model == "tiny":
            from pipelines.testing import write_tiny_model

            model = str(Path(tmp) / "tiny-streamdiffusion")
            write_tiny_model("streamdiffusion", Path(model))
        elif model == "tiny-sdxl":
            from pipelines.testing import write_tiny_model

            model = str(Path(tmp) / "tiny-streamdiffusion-sdxl")
            write_tiny_model("streamdiffusion-sdxl", Path(model))
        elif model == "sd-turbo-arch":
            from pipelines.testing.streamdiffusion import write_random_sd_turbo

            model = str(Path(tmp) / "sd-turbo-arch")
            write_random_sd_turbo(Path(model))
        frames = _frames(args.frames + args.warmup, args.size)
        counts = [int(v) for v in str(args.controlnets).split(",")]
        cn_dirs: list[str] = []
        if max(counts) > 0 and args.controlnet_ids:
            cn_dirs = [v for v in str(args.controlnet_ids).split(",") if v]
        elif max(counts) > 0:
            if args.model != "tiny":
                raise SystemExit("--controlnets above 0 needs --model tiny (tiny ControlNets fit only the tiny UNet)")
            from pipelines.testing.streamdiffusion import write_tiny_controlnet

            for i in range(min(max(counts), len(CONTROLNET_PLAN))):
                cn_dirs.append(str(Path(tmp) / f"controlnet-{i}"))
                write_tiny_controlnet(Path(cn_dirs[-1]), seed=6 + i)
        aux = _tiny_aux(Path(tmp) / "aux") if args.preprocessors == "models" and max(counts) > 0 else None
        batching = [v.strip() == "on" for v in str(args.batching).split(",")] if aux is not None else [True]
        rows = []
        for backend in backends:
            for n in streams:
                for count in counts:
                    for batched in batching if count else [True]:
                        rows.append(_worker_row(args, model, frames, n, backend, cn_dirs[:count], aux if count else None, batched))
        if args.baselines:
            rows.append(_pipeline_row(args, model, frames, "streamdiffusion-sequential", use_denoising_batch=False))
            if args.cfg_type != "full":
                rows.append(_pipeline_row(args, model, frames, "streamdiffusion-cfg-full", cfg_type="full"))
            rows.append(_img2img_row(args, model, frames))
        try:
            for row in rows:
                row.run(range(args.warmup))
            # Rows take turns, a slice of the frames each: a shared machine's load hits all alike.
            timed = list(range(args.warmup, args.warmup + args.frames))
            rounds = max(1, min(args.rounds, args.frames))
            latencies: list[list[float]] = [[] for _ in rows]
            walls = [0.0 for _ in rows]
            for r in range(rounds):
                part = timed[r * len(timed) // rounds : (r + 1) * len(timed) // rounds]
                for k, row in enumerate(rows):
                    lat, wall = row.run(part)
                    latencies[k] += lat
                    walls[k] += wall
        finally:
            for row in rows:
                row.close()
        results = [
            {**row.meta, **_summary(lat, wall, args.frames, row.streams)}
            for row, lat, wall in zip(rows, latencies, walls, strict=True)
        ]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return {
        "device": device_name,
        "model": {
            "tiny": "tiny (random weights, sd-turbo family)",
            "tiny-sdxl": "tiny (random weights, sdxl-turbo family)",
            "sd-turbo-arch": "sd-turbo architecture (random weights)",
        }.get(args.model, args.model),
        "size": f"{args.size}x{args.size}",
        "t_index_list": args.t_index_list,
        "cfg_type": args.cfg_type,
        "guidance_scale": args.guidance_scale,
        "frames": args.frames,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "results": results,
    }


def _json(report: dict[str, Any]) -> dict[str, Any]:
    """The `--json` object: device, model and the six figures per row, nothing else."""
    with_cn = any(r.get("controlnets") for r in report["results"])
    # `preprocessors` and `batched` only when rows compare batched and per-stream preprocessor models
    keys = ("preprocessors", "batched") if any(not r.get("batched", True) for r in report["results"]) else ()
    return {
        "device": report["device"],
        "model": report["model"],
        # `controlnets` only when a row has some (the six figures otherwise, as before)
        "results": [
            {k: r[k] for k in (*_JSON_KEYS, "controlnets", *keys) if k != "controlnets" or with_cn} for r in report["results"]
        ],
    }


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"device: {report['device']}; model: {report['model']}; {report['size']}; "
        f"t_index_list {report['t_index_list']}; cfg {report['cfg_type']} (guidance {report['guidance_scale']})",
        "",
        "| mode | backend | streams | UNet calls x rows per tick | aggregate fps | per-stream fps | latency p50 / p99 (ms) | lag (frames) | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['mode']} | {r['backend']} | {r['streams']} | {r['unet_calls_per_frame']} x {r['unet_rows']} | {r['aggregate_fps']} | "
            f"{r['per_stream_fps']} | {r['latency_ms_p50']} / {r['latency_ms_p99']} | {r['lag_frames']} | {r.get('compile_s', '')} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; `python -m benchmarks realtime_diffusion` calls it without arguments."""
    args = _parser().parse_args(list(argv) if argv is not None else [])
    if not logging.getLogger().handlers:
        # The compile backend's progress (one line per graph) on stderr.
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        logging.getLogger("pipelines.live.stream_backends").setLevel(logging.INFO)
    report = run(args)
    print(json.dumps(_json(report)) if args.json else _table(report), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(sys.argv[1:])
