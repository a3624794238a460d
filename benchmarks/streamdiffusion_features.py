"""`streamdiffusion` part 6: what the IP-Adapter and cached attention cost, and what the bank buys.

One run, tiny random-weight models on the CPU (one torch thread), rows taking turns:

- **fps** with nothing, with the IP-Adapter (the tiny one, a style image), with cached
  attention banking 1 to 4 frames, and with both; each ratio is against the "off" row of the
  same run;
- **temporal consistency**: the mean frame-to-frame output difference (0..255) on a slowly
  moving input (a textured frame shifting one pixel every frame), without and with the bank
  (1 frame), on the tiny UNet as written and with its self-attention sharpened x4 (random
  self-attention is near-uniform; trained models' is peaked).

    .venv/bin/python benchmarks/streamdiffusion_features.py [--frames 60] [--rounds 4] [--size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._streamdiffusion import add_row_options, fps_in_turns, loaded, tiny_params  # noqa: E402 (after the path)


def _style(_url: str) -> Any:
    from PIL import Image

    return Image.new("RGB", (32, 32), (200, 40, 10))


def _moving(count: int, size: int) -> Any:
    """`count` frames of one textured image shifting right by a pixel per frame."""
    import torch

    gen = torch.Generator().manual_seed(0)
    wide = torch.randint(0, 255, (size, size + count, 3), generator=gen, dtype=torch.uint8)
    wide = torch.nn.functional.avg_pool2d(wide.permute(2, 0, 1).float().unsqueeze(0), 5, 1, 2).squeeze(0).permute(1, 2, 0)
    return torch.stack([wide[:, i : i + size] for i in range(count)]).to(torch.uint8)


def _flicker(pipe: Any, frames: Any) -> float:
    prev, diffs = None, []
    for i in range(frames.shape[0]):
        out = pipe.process(frames[i : i + 1]).float()
        if prev is not None and i >= 4:
            diffs.append(float((out - prev).abs().mean()))
        prev = out
    return sum(diffs) / len(diffs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import pipelines.live.streamdiffusion as sd
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams
    from pipelines.testing import write_tiny_model

    sd.fetch_style_image = _style  # type: ignore[assignment]
    report: dict[str, Any] = {"size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        common = tiny_params(Path(tmp) / "tiny", args.size)
        ip = Path(tmp) / "ip"
        write_tiny_model("ip-adapter", ip)
        os.environ["AUX_MODELS"] = f"ip_adapter={ip}"
        ipa = {"ip_adapter": {"enabled": True, "scale": 1.0}, "ip_adapter_style_image_url": "style"}

        def cache(n: int) -> dict[str, Any]:
            return {"cached_attention": {"enabled": True, "max_frames": n, "interval": 1}}

        rows = {
            "off": {},
            "ip-adapter": ipa,
            **{f"cached attention, {n} frame{'s' if n > 1 else ''}": cache(n) for n in (1, 2, 3, 4)},
            "ip-adapter + cached attention 1": {**ipa, **cache(1)},
        }
        with loaded({label: StreamDiffusionParams(**common, **extra) for label, extra in rows.items()}) as pipes:
            for label, pipe in pipes.items():
                assert not pipe.status()["warnings"], (label, pipe.status()["warnings"])
            fps, done = fps_in_turns(pipes, _moving(args.frames, args.size), args.rounds)
        report["fps"] = fps
        report["ratio_vs_off"] = {label: v / fps["off"] for label, v in fps.items()}
        moving = _moving(args.consistency_frames, args.size)
        consistency: dict[str, float] = {}
        for sharpen in (1.0, 4.0):
            for label, extra in (("without bank", {}), ("with bank (1 frame)", cache(1))):
                pipe = StreamDiffusionPipeline(device="cpu")
                pipe.load(StreamDiffusionParams(**common, **extra))
                with torch.no_grad():
                    for name, module in pipe._models.pipe.unet.named_modules():  # type: ignore[union-attr]
                        if name.endswith("attn1"):
                            module.to_q.weight.mul_(sharpen)
                            module.to_k.weight.mul_(sharpen)
                consistency[f"self-attention x{sharpen:g}, {label}"] = _flicker(pipe, moving)
                pipe.close()
        report["frame_to_frame_difference"] = consistency
    report["frames"] = done
    return report


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="streamdiffusion_features", description=__doc__.split("\n\n")[0])
    add_row_options(p)
    p.add_argument("--consistency-frames", type=int, default=24)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for label, v in report["fps"].items():
        print(f"fps {label:34s} {v:6.1f}  ratio {report['ratio_vs_off'][label]:.3f}")
    for label, v in report["frame_to_frame_difference"].items():
        print(f"frame-to-frame difference, {label:42s} {v:.3f}")


if __name__ == "__main__":
    main()
