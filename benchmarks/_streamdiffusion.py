"""What the `streamdiffusion_*` benchmarks share: the tiny model, one loaded pipeline per row,
and rows timed in turns (same-run ratios).

Not a benchmark (`python -m benchmarks` skips names starting with `_`).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def add_row_options(parser: argparse.ArgumentParser) -> None:
    """`--size`, `--frames` and `--rounds`, as `tiny_params` and `fps_in_turns` take them."""
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=60, help="timed frames per row")
    parser.add_argument("--rounds", type=int, default=4)


def tiny_params(folder: Path, size: int) -> dict[str, Any]:
    """Write the tiny random-weight streamdiffusion model to `folder` and return the params
    every row shares (two steps, `size` x `size`). Sets torch to one thread (a quieter CPU
    figure on a shared machine)."""
    import torch

    from pipelines.testing import write_tiny_model

    torch.set_num_threads(1)
    write_tiny_model("streamdiffusion", folder)
    return {"model_id": str(folder), "width": size, "height": size, "t_index_list": [20, 35]}


@contextlib.contextmanager
def loaded(rows: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One CPU `StreamDiffusionPipeline` per row (label -> `StreamDiffusionParams`), loaded in
    order; all are closed on the way out, however the block ends."""
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline

    with contextlib.ExitStack() as stack:
        pipes: dict[str, Any] = {}
        for label, params in rows.items():
            pipe = StreamDiffusionPipeline(device="cpu")
            stack.callback(pipe.close)
            pipe.load(params)
            pipes[label] = pipe
        yield pipes


def fps_in_turns(pipes: Mapping[str, Any], frames: Any, rounds: int) -> tuple[dict[str, float], int]:
    """Frames per second of each pipeline on `frames` (`(N, H, W, 3)` uint8), one frame per
    `process` call. The frames are cut into `rounds` chunks; in each round every row runs the
    chunk, starting one row further along (no row always first). Returns the fps per row and
    the frames each row processed."""
    times = dict.fromkeys(pipes, 0.0)
    per_round = max(1, frames.shape[0] // rounds)
    order = list(pipes.items())
    for r in range(rounds):
        chunk = frames[r * per_round : (r + 1) * per_round]
        for label, pipe in order[r % len(order) :] + order[: r % len(order)]:
            started = time.perf_counter()
            for i in range(chunk.shape[0]):
                pipe.process(chunk[i : i + 1])
            times[label] += time.perf_counter() - started
    done = per_round * rounds
    return {label: done / t for label, t in times.items()}, done
