"""Visual batch routes on tiny models: time in our code vs time in the diffusers call.

For each route (text-to-image, image-to-image, image-to-video, upscale) the engine app runs
on loopback with the tiny random-weight model of the route (`pipelines.testing`). Two clocks per
request, both in the server process:

- the request: an outermost aiohttp middleware, from handler entry (body not yet read) to the
  response object being returned (the JSON with its PNG data URLs built);
- diffusers: the diffusers pipeline's `__call__`, wrapped with a timer.

"Ours" is the difference: body parsing, image decoding, the registry's thread hand-off,
seeds/generators, LoRA and VAE switches, PNG encoding and JSON. Goal: under 2% of request time.
Tiny models make diffusers' share small, so this is the worst case for the ratio; the ms
figures carry over to real models, whose diffusers time is seconds.

    .venv/bin/python -m benchmarks batch_bench
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]

REQUESTS = 5
WARMUP = 2


def _png(width: int, height: int) -> bytes:
    import numpy as np
    from PIL import Image

    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    image = Image.fromarray(np.concatenate(np.broadcast_arrays(x, y, 255 - x), axis=2))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# route, tiny task, label, JSON body or multipart fields, input image size
CASES: list[tuple[str, str, str, dict[str, Any], tuple[int, int] | None]] = [
    ("/text-to-image", "text-to-image", "64x64, 2 steps", {"height": 64, "width": 64, "num_inference_steps": 2}, None),
    ("/text-to-image", "text-to-image", "128x128, 2 steps", {"height": 128, "width": 128, "num_inference_steps": 2}, None),
    ("/image-to-image", "image-to-image", "64x64, 2 of 4 steps", {"num_inference_steps": 4, "strength": 0.5}, (64, 64)),
    ("/image-to-image", "image-to-image", "128x128, 2 of 4 steps", {"num_inference_steps": 4, "strength": 0.5}, (128, 128)),
    ("/image-to-video", "image-to-video", "64x64, 4 frames, 2 steps", {"height": 64, "width": 64, "num_inference_steps": 2}, (64, 64)),
    ("/upscale", "upscale", "16 -> 64, 2 steps", {"num_inference_steps": 2}, (16, 16)),
    ("/upscale", "upscale", "32 -> 128, 2 steps", {"num_inference_steps": 2}, (32, 32)),
]

_PIPELINE_CLASSES = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableVideoDiffusionPipeline",
    "StableDiffusionUpscalePipeline",
)


async def _run(models: Path) -> list[dict[str, Any]]:
    import aiohttp
    import diffusers
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from livestream.app import build_app
    from livestream.settings import Settings

    inside: list[float] = []
    for name in _PIPELINE_CLASSES:
        cls = getattr(diffusers, name)
        original = cls.__call__

        @functools.wraps(original)  # keeps the signature the pipelines inspect
        def timed(self: Any, *args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                inside.append(time.perf_counter() - start)

        cls.__call__ = timed

    handled: list[float] = []

    @web.middleware
    async def clock(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            return await handler(request)
        finally:
            handled.append(time.perf_counter() - start)

    app = build_app(Settings(model_dir=models))
    app.middlewares.insert(0, clock)
    results: list[dict[str, Any]] = []
    async with TestClient(TestServer(app)) as client:
        for path, task, label, fields, size in CASES:
            body = {"model_id": f"tiny-{task}", "seed": 1, "prompt": "a lighthouse", **fields}
            image = _png(*size) if size else None

            async def request() -> None:
                if image is None:
                    resp = await client.post(path, json=body)
                else:
                    form = aiohttp.FormData()
                    for key, value in body.items():
                        form.add_field(key, str(value))
                    form.add_field("image", image, filename="in.png", content_type="image/png")
                    resp = await client.post(path, data=form)
                assert resp.status == 200, await resp.text()
                await resp.read()

            for _ in range(WARMUP):  # the first loads the model
                await request()
            totals: list[float] = []
            calls: list[float] = []
            for _ in range(REQUESTS):
                inside.clear()
                handled.clear()
                await request()
                totals.append(handled[-1])
                calls.append(sum(inside))
            ours = [t - c for t, c in zip(totals, calls, strict=True)]
            results.append(
                {
                    "route": path,
                    "case": label,
                    "request_ms": statistics.median(totals) * 1e3,
                    "diffusers_ms": statistics.median(calls) * 1e3,
                    "ours_ms": statistics.median(ours) * 1e3,
                    "ours_pct": statistics.median(o / t for o, t in zip(ours, totals, strict=True)) * 100,
                }
            )
    return results


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from pipelines.testing import write_tiny_model

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        for task in sorted({case[1] for case in CASES}):
            write_tiny_model(task, models / f"tiny-{task}")
        results = asyncio.run(_run(models))
    print(f"medians of {REQUESTS} requests each (after {WARMUP} warm-up)")
    print("| route | case | request ms | diffusers ms | ours ms | ours % |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['route']} | {r['case']} | {r['request_ms']:.1f} | {r['diffusers_ms']:.1f} | "
            f"{r['ours_ms']:.2f} | {r['ours_pct']:.2f} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
