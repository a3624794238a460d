"""Real-time diffusion: fps and per-frame latency of the `streamdiffusion` live pipeline.

Rows, all in one run on the same model, size and frames:

- `streamdiffusion` — the live pipeline (`pipelines.live.streamdiffusion`): stream batch over
  `t_index_list` (one UNet call per frame), residual CFG `self`, TAESD, cached embeddings;
- `streamdiffusion-sequential` — the same with `use_denoising_batch=False` (n UNet calls per
  frame, the paper's "sequential denoising" reference for Stream Batch);
- `streamdiffusion-cfg-full` — the stream batch with full CFG (2n UNet rows; the RCFG baseline);
- `diffusers-img2img` — the naive baseline: diffusers' `StableDiffusionImg2ImgPipeline` called
  once per frame (PIL in and out, the prompt encoded every call, LCMScheduler, the same number
  of denoising steps and the same TAESD).

With `--streams 1,4` each N > 1 runs N streams through `pipelines.live.stream_batch.step`
together (one VAE encode, one UNet call and one VAE decode per tick for all N): aggregate and
per-stream fps. Rows run frame by frame in turn (row A frame 1, row B frame 1, ...), so a shared machine's
load hits them alike. Latency is the wall time of one frame's (or one tick's) computation and
fps is frames over the summed latencies; the stream batch's output also lags its input by
`len(t_index_list) - 1` frames (`lag_frames`).

    .venv/bin/python -m benchmarks realtime_diffusion
    .venv/bin/python benchmarks/realtime_diffusion.py --json --size 128 --frames 40 --streams 1,4

`--model tiny` (default) writes the tiny sd-turbo-family model to a temporary folder;
`--model sd-turbo-arch` writes sd-turbo's real architecture with random weights (float16,
about 2.6 GB; for a GPU: `--device cuda --size 512`); a path or Hugging Face id loads that
model. Parts 2 and 3 add backends (`--backend`).
"""

from __future__ import annotations

import argparse
import json
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
    """One benchmark row: `tick(i)` processes frame i (of every stream); `meta` goes in the result."""

    def __init__(self, meta: dict[str, Any], tick: Callable[[int], None], streams: int = 1) -> None:
        self.meta = meta
        self.tick = tick
        self.streams = streams


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


def _batched_streams_row(args: argparse.Namespace, model: str, frames: Any, streams: int) -> _Row:
    """N streams, each its own state (seed, prompt, buffers), one encode/UNet/decode per tick."""
    import torch

    from pipelines.live.stream_batch import Schedule, StreamState, make_noise, step
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    pipe = StreamDiffusionPipeline(device=args.device)
    pipe.load(StreamDiffusionParams(model_id=model, prompt=PROMPT, t_index_list=args.t_index_list, width=args.size, height=args.size))
    m = pipe._models
    assert m is not None
    backend = m.backend
    with torch.inference_mode():
        probe = backend.encode(torch.zeros(1, 3, args.size, args.size, device=m.device, dtype=m.dtype))
        shape = tuple(probe.shape[1:])
        schedule = Schedule.build(m.scheduler_config, args.t_index_list, 50, device=m.device, dtype=m.dtype)
        states = [
            StreamState(
                schedule=schedule,
                noise=make_noise((schedule.steps, *shape), [(s, 1.0)]).to(m.device, m.dtype),
                cond=pipe._embed(f"{PROMPT} {s}"),
                uncond=pipe._embed(""),
                cfg_type=args.cfg_type,
                guidance_scale=args.guidance_scale,
            )
            for s in range(streams)
        ]

    def tick(i: int) -> None:
        with torch.inference_mode():
            x = frames[i : i + 1].to(m.device).permute(0, 3, 1, 2).to(m.dtype) / 127.5 - 1.0
            latents = backend.encode(x.expand(streams, -1, -1, -1))
            outs = step(backend, [(s, latents[k : k + 1]) for k, s in enumerate(states)])
            images = backend.decode(torch.cat(outs))
            ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()

    meta = {
        "streams": streams,
        "backend": getattr(backend, "name", "eager"),
        "mode": "streamdiffusion-batched-streams",
        "unet_rows": sum(s.unet_rows() for s in states),
        "unet_calls_per_frame": 1,
        "lag_frames": len(args.t_index_list) - 1,
    }
    return _Row(meta, tick, streams)


def _img2img_row(args: argparse.Namespace, model: str, frames: Any) -> _Row:
    """diffusers' own img2img pipeline per frame: the naive way to restyle a stream."""
    import torch
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionImg2ImgPipeline
    from PIL import Image

    from pipelines.live.streamdiffusion import DEFAULT_TINY_VAE, StreamDiffusionPipeline
    from pipelines.loading import pick_device, resolve_model_source, torch_dtype_for

    device = pick_device(args.device)
    dtype = torch_dtype_for(device)
    source = resolve_model_source(model, None)
    tiny = StreamDiffusionPipeline._bundled_tiny_vae(source.path) or DEFAULT_TINY_VAE
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="realtime_diffusion", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="tiny",
        help="'tiny' or 'sd-turbo-arch' (random weights, written to a temp folder), a folder or a Hugging Face id",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--size", type=int, default=64, help="frame width and height (multiple of 8)")
    p.add_argument("--frames", type=int, default=40, help="timed frames per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first, per row")
    p.add_argument("--t-index-list", default="20,35", help="comma-separated indices into the 50-step LCM grid")
    p.add_argument("--cfg-type", default="self", choices=["none", "full", "self", "initialize"])
    p.add_argument("--guidance-scale", type=float, default=1.2)
    p.add_argument("--streams", default="1", help="comma-separated stream counts, e.g. 1,4")
    p.add_argument("--backend", default="eager", choices=["eager"], help="UNet/VAE backend (parts 2/3 add more)")
    p.add_argument("--no-baseline", action="store_true", help="skip the diffusers img2img and variant rows")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.t_index_list = [int(v) for v in str(args.t_index_list).split(",")]
    streams = [int(v) for v in str(args.streams).split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="rtd-") as tmp:
        model = args.model
        if model == "tiny":
            from pipelines.tiny import write_tiny_model

            model = str(Path(tmp) / "tiny-streamdiffusion")
            write_tiny_model("streamdiffusion", Path(model))
        elif model == "sd-turbo-arch":
            from pipelines.tiny_streamdiffusion import write_random_sd_turbo

            model = str(Path(tmp) / "sd-turbo-arch")
            write_random_sd_turbo(Path(model))
        frames = _frames(args.frames + args.warmup, args.size)
        rows = [
            _pipeline_row(args, model, frames, "streamdiffusion") if n == 1 else _batched_streams_row(args, model, frames, n)
            for n in streams
        ]
        if not args.no_baseline:
            rows.append(_pipeline_row(args, model, frames, "streamdiffusion-sequential", use_denoising_batch=False))
            if args.cfg_type != "full":
                rows.append(_pipeline_row(args, model, frames, "streamdiffusion-cfg-full", cfg_type="full"))
            rows.append(_img2img_row(args, model, frames))
        # Frame by frame, every row in turn: a shared machine's load hits all rows alike.
        for row in rows:
            for i in range(args.warmup):
                row.tick(i)
        latencies: list[list[float]] = [[] for _ in rows]
        for i in range(args.warmup, args.warmup + args.frames):
            for k, row in enumerate(rows):
                t0 = time.perf_counter()
                row.tick(i)
                latencies[k].append(time.perf_counter() - t0)
        results = [
            {**row.meta, **_summary(lat, sum(lat), args.frames, row.streams)} for row, lat in zip(rows, latencies, strict=True)
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


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"device: {report['device']}; model: {report['model']}; {report['size']}; "
        f"t_index_list {report['t_index_list']}; cfg {report['cfg_type']} (guidance {report['guidance_scale']})",
        "",
        "| mode | streams | UNet calls x rows per frame | aggregate fps | per-stream fps | latency p50 / p99 (ms) | lag (frames) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['mode']} | {r['streams']} | {r['unet_calls_per_frame']} x {r['unet_rows']} | {r['aggregate_fps']} | {r['per_stream_fps']} | "
            f"{r['latency_ms_p50']} / {r['latency_ms_p99']} | {r['lag_frames']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; `python -m benchmarks realtime_diffusion` calls it without arguments."""
    args = _parser().parse_args(list(argv) if argv is not None else [])
    report = run(args)
    print(json.dumps(report) if args.json else _table(report), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(sys.argv[1:])
