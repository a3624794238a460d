"""`streamdiffusion` params: what a control message costs, and that the new fields cost no fps.

Three figures, one run, tiny sd-turbo-family model on the CPU:

- **validate**: `parse_control` (JSON → the variant's params model, every validator) of each
  of ai-runner's six default files (tests/streamdiffusion/data), µs per message;
- **update**: `StreamDiffusionPipeline.update_params` of the same file again (a no-change
  update) and of the file with a new prompt, ms per call, on a loaded pipeline;
- **fps**: frames per second with the class defaults vs. the same params with every new field
  sent at its "off" value, and vs. the sd15 file (ControlNets, IP-Adapter: off with a
  warning); rows take turns (`--rounds`), so the ratio is same-run.

    .venv/bin/python benchmarks/streamdiffusion_params.py [--frames 60] [--rounds 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._streamdiffusion import add_row_options, fps_in_turns, loaded, tiny_params  # noqa: E402 (after the path)

DATA = ROOT / "tests" / "streamdiffusion" / "data"
FILES = ("sdturbo", "sd15", "sd15_v2v", "sdxl", "sdxl_faceid", "sdxl_v2v")
OFF = {
    "controlnets": [],
    "ip_adapter": {"enabled": False},
    "cached_attention": {"enabled": False},
    "use_safety_checker": False,
    "image_preprocessing": None,
    "image_postprocessing": None,
    "latent_preprocessing": None,
    "latent_postprocessing": None,
    "show_reloading_frame": True,
}


def _validate(repeats: int) -> dict[str, float]:
    from livestream.live.control import parse_control
    from pipelines.live.streamdiffusion_params import VARIANTS

    out = {}
    for name in FILES:
        data = (DATA / f"{name}.json").read_bytes()
        model = VARIANTS["streamdiffusion-" + name.replace("_", "-")]
        parse_control(data, model)
        started = time.perf_counter()
        for _ in range(repeats):
            parse_control(data, model)
        out[name] = (time.perf_counter() - started) / repeats * 1e6
    return out


def _frames(count: int, size: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 255, (count, size, size, 3), generator=gen, dtype=torch.uint8)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import pipelines.live.streamdiffusion as sd
    from pipelines.live.streamdiffusion_features import feature_warnings
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    sd.fetch_style_image = _offline  # type: ignore[assignment]  # no network: fail at once
    report: dict[str, Any] = {"validate_us": _validate(args.repeats)}
    with tempfile.TemporaryDirectory() as tmp:
        common = tiny_params(Path(tmp) / "tiny", args.size)
        sd15 = json.loads((DATA / "sd15.json").read_text())
        sd15 = {**sd15, **common, "acceleration": "none"}
        rows = {
            "defaults": StreamDiffusionParams(**common),
            "new fields off": StreamDiffusionParams(**common, **OFF),
            "sd15 file (parts off, warned)": StreamDiffusionParams(**sd15),
        }
        with loaded(rows) as pipes:
            fps, done = fps_in_turns(pipes, _frames(args.frames, args.size), args.rounds)
            report["fps"] = fps
            report["fps_ratio_vs_defaults"] = {label: v / fps["defaults"] for label, v in fps.items()}
            pipe = pipes["sd15 file (parts off, warned)"]
            same, new_prompt = [], []
            for i in range(args.updates):
                started = time.perf_counter()
                pipe.update_params(StreamDiffusionParams(**sd15))
                same.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                pipe.update_params(StreamDiffusionParams(**{**sd15, "prompt": f"prompt {i}"}))
                new_prompt.append((time.perf_counter() - started) * 1000)
            report["update_ms"] = {"same file": statistics.median(same), "new prompt": statistics.median(new_prompt)}
            started = time.perf_counter()
            for _ in range(args.repeats):
                feature_warnings(pipe.params)
            report["warnings_us"] = (time.perf_counter() - started) / args.repeats * 1e6
    report["size"] = args.size
    report["frames"] = done
    return report


def _offline(url: str) -> Any:
    raise ValueError(f"Failed to fetch image from URL: {url}: offline benchmark")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="streamdiffusion_params", description=__doc__.split("\n\n")[0])
    add_row_options(p)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--repeats", type=int, default=500, help="validations per file")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("validate (parse_control), µs per message: " + ", ".join(f"{k} {v:.0f}" for k, v in report["validate_us"].items()))
    print(f"feature_warnings: {report['warnings_us']:.1f} µs")
    print("update_params, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in report["update_ms"].items()))
    for label, v in report["fps"].items():
        print(f"fps {label:32s} {v:6.1f}  ratio {report['fps_ratio_vs_defaults'][label]:.3f}")


if __name__ == "__main__":
    main()
