"""The real-time diffusion numbers on an NVIDIA GPU in one call (issue 32), written to ONE JSON.

    benchmarks/gpu_check.sh                      # on the GPU machine (installs .whl/ first)
    make gpu-check                               # the same
    python -m benchmarks.gpu_check --device cpu --tiny --out /tmp/g.json   # the CPU dry run

Steps, each a subprocess capped by its own timeout and by the whole run's `--budget` (default
450 s, so the run ends inside 8 minutes with the install and the start):

1. `models`: sd-turbo's full-size architecture with random weights (UNet ~866M parameters, the
   ViT-H text encoder, TAESD; float16) and a full-size SD 2.1 ControlNet (random weights, the
   depth ControlNet's architecture); `--tiny`: the tiny sd-turbo family and a tiny ControlNet.
2. `pytest_gpu`: `pytest -m gpu` over the test files that have GPU tests.
3. `realtime_eager`, `realtime_compile`: `benchmarks/realtime_diffusion.py` at 512² (`--tiny`:
   64²) with 1 and 4 streams on one worker, per backend (a separate run each, so a compile that
   runs out of time leaves the eager numbers).
4. `realtime_controlnet`: one stream with one ControlNet (eager). The preprocessor is the cheap
   `canny` one: the depth model's own cost is not in this figure.
5. `first_frame`: time from a fresh Python process's start to its first processed frame, with
   the same settings a `livestream serve` session uses to load the pipeline (compile backend),
   twice: `cold` (right after the compile row: Inductor's cache holds this process's graphs),
   `warm` (again: the cache as a restarted `serve` finds it); eager where `--backends` has no
   compile (the `--tiny` default: Inductor on a CPU takes minutes, the dry run must be quick). In-process (the pipeline, not the
   HTTP/trickle/PyAV path: the device image has no PyAV or ffmpeg).

The JSON: `{"device", "torch", "tiny", "size", "budget_s", "total_s", "goals", "steps":
{name: {"rc", "seconds", "timed_out", ...}}, "models", "pytest_gpu", "realtime", "controlnet",
"first_frame", "verdict"}`; `verdict` compares each goal with its figure (`null` where the step
did not produce it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The issue's goals (H100-class GPU).
GOALS = {
    "single_stream_fps": 150.0,  # sd-turbo img2img 512², 1 step, one stream
    "four_streams_per_stream_fps": 30.0,  # 4 streams on one GPU worker, each
    "controlnet_fps": 60.0,  # sd-turbo + one depth ControlNet
    "first_frame_s": 5.0,  # time to first processed frame after serve, cached compiled graphs
}

#: Per-step caps (seconds), full size; --tiny uses its own, smaller ones.
CAPS = {"models": 90, "pytest_gpu": 60, "realtime_eager": 60, "realtime_compile": 150, "realtime_controlnet": 45, "first_frame": 45}


def write_random_controlnet(out: Path, *, half: bool = True) -> None:
    """A ControlNet with the full-size SD 2.1 (sd-turbo) architecture, random weights: the cost of
    `thibaud/controlnet-sd21-depth-diffusers` and its kin (3-channel conditioning image)."""
    import torch
    from diffusers import ControlNetModel

    from pipelines.testing.streamdiffusion import SD_TURBO_UNET

    keys = ("in_channels", "layers_per_block", "block_out_channels", "down_block_types", "cross_attention_dim")
    keys += ("attention_head_dim", "use_linear_projection", "norm_num_groups")
    torch.manual_seed(1)
    net = ControlNetModel(**{k: SD_TURBO_UNET[k] for k in keys}, conditioning_channels=3)  # type: ignore[arg-type]
    if half:
        net.to(torch.float16)
    net.save_pretrained(out, safe_serialization=True)


def _build_models(work: Path, tiny: bool) -> dict[str, Any]:
    from pipelines.testing import write_tiny_model
    from pipelines.testing.streamdiffusion import write_random_sd_turbo, write_tiny_controlnet

    model, cn = work / "model", work / "controlnet"
    t0 = time.perf_counter()
    if tiny:
        write_tiny_model("streamdiffusion", model)
    else:
        write_random_sd_turbo(model)
    t1 = time.perf_counter()
    if tiny:
        write_tiny_controlnet(cn)
    else:
        write_random_controlnet(cn)
    t2 = time.perf_counter()

    def mb(p: Path) -> float:
        return round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6, 1)

    return {
        "model": "tiny sd-turbo family" if tiny else "sd-turbo architecture (random weights, float16)",
        "model_mb": mb(model),
        "controlnet": "tiny ControlNet" if tiny else "SD 2.1 ControlNet architecture (random weights, float16; depth's cost)",
        "controlnet_mb": mb(cn),
        "model_build_s": round(t1 - t0, 1),
        "controlnet_build_s": round(t2 - t1, 1),
    }


def _first_frame(model: str, device: str, size: int, backend: str, started: float) -> dict[str, Any]:
    """In a fresh process: load the pipeline as a serve session does and process one frame."""
    import torch

    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    imported = time.time()
    params = StreamDiffusionParams(
        model_id=model,
        prompt="a watercolour painting of a city at night",
        width=size,
        height=size,
        acceleration="compile" if backend == "compile" else "none",
    )
    pipe = StreamDiffusionPipeline(device=device)
    pipe.load(params)
    loaded = time.time()
    frame = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8)
    out = pipe.process(frame)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    done = time.time()
    status = pipe.status()
    pipe.close()
    return {
        "backend": status.get("backend"),
        "first_frame_s": round(done - started, 2),
        "import_s": round(imported - started, 2),
        "load_s": round(loaded - imported, 2),
        "first_process_s": round(done - loaded, 2),
        "output_shape": list(getattr(out, "shape", [])),
    }


def _child(argv: list[str]) -> None:
    """`--child models|first-frame ...`: one step's work in a subprocess, printing one JSON line."""
    kind = argv[0]
    if kind == "models":
        report = _build_models(Path(argv[1]), argv[2] == "1")
    else:
        started = float(os.environ.get("GPU_CHECK_T0", time.time()))
        report = _first_frame(argv[1], argv[2], int(argv[3]), argv[4], started)
    print("GPU_CHECK_JSON " + json.dumps(report), flush=True)


class _Runner:
    def __init__(self, budget: float, log: Path | None) -> None:
        self.deadline = time.monotonic() + budget
        self.steps: dict[str, dict[str, Any]] = {}
        self.log = log

    def run(self, name: str, cmd: list[str], cap: float, env: dict[str, str] | None = None) -> str | None:
        """Runs `cmd` with timeout min(cap, what is left); returns its stdout (None on failure)."""
        left = self.deadline - time.monotonic()
        timeout = max(0.0, min(cap, left))
        step: dict[str, Any] = {"cmd": " ".join(cmd[1:]) if cmd[0] == sys.executable else " ".join(cmd)}
        self.steps[name] = step
        if timeout < 5:
            step.update(rc=None, seconds=0.0, timed_out=True, skipped="no time left in the budget")
            return None
        t0 = time.monotonic()
        print(f"[gpu_check] {name} (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
            )
            rc: int | None = proc.returncode
            out, err, timed_out = proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            rc, timed_out = None, True
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        step.update(rc=rc, seconds=round(time.monotonic() - t0, 1), timed_out=timed_out)
        if rc != 0:
            step["stderr_tail"] = err[-1500:]
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(f"\n===== {name} rc={rc} timed_out={timed_out}\n{out}\n--- stderr\n{err}\n")
        return out if rc == 0 else None


def _json_line(out: str | None, prefix: str = "GPU_CHECK_JSON ") -> Any:
    if not out:
        return None
    for line in reversed(out.splitlines()):
        if prefix and line.startswith(prefix):
            return json.loads(line[len(prefix) :])
        if not prefix and line.startswith("{"):
            return json.loads(line)
    return None


def _row(results: list[dict[str, Any]], streams: int, backend: str) -> dict[str, Any] | None:
    return next((r for r in results if r.get("streams") == streams and r.get("backend") == backend), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny models, 64², few frames: the CPU dry run")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "gpu_check.json"))
    p.add_argument("--budget", type=float, default=450.0, help="seconds for all steps together")
    p.add_argument("--frames", type=int, default=None, help="timed frames per stream and row")
    p.add_argument("--skip-pytest", action="store_true")
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated: eager, compile (default: both; --tiny: eager, as Inductor on a CPU takes minutes "
        "and the compile backend has its own tests)",
    )
    args = p.parse_args(argv)

    t_start = time.monotonic()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    log = out_path.with_suffix(".log")
    log.write_text("")
    runner = _Runner(args.budget, log)
    tiny = args.tiny
    backends = [b.strip() for b in (args.backends or ("eager" if tiny else "eager,compile")).split(",") if b.strip()]
    size = 64 if tiny else 512
    frames = args.frames or (4 if tiny else 120)
    warmup = 1 if tiny else 10
    caps = {k: (40 if k == "realtime_compile" else 30) for k in CAPS} if tiny else dict(CAPS)
    py = sys.executable
    me = [py, "-m", "benchmarks.gpu_check", "--child"]
    report: dict[str, Any] = {
        "tiny": tiny,
        "size": f"{size}x{size}",
        "frames": frames,
        "budget_s": args.budget,
        "goals": GOALS,
        "measured": False,
        "note": "full-size random-weight sd-turbo architecture; numbers are for the architecture, not trained weights",
    }
    try:
        import torch

        report["torch"] = torch.__version__
        cuda = torch.cuda.is_available()
        report["device"] = torch.cuda.get_device_name(0) if cuda and args.device.startswith("cuda") else (
            f"{platform.machine()} CPU, {os.cpu_count()} cores"
        )
    except Exception as exc:  # reported, the rest still runs (and fails, saying so)
        report["torch"] = f"unavailable: {exc}"
        report["device"] = "unknown"

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        report["models"] = _json_line(runner.run("models", [*me, "models", str(work), "1" if tiny else "0"], caps["models"]))
        model, cn = str(work / "model"), str(work / "controlnet")
        have_models = report["models"] is not None

        # pytest -m gpu: the files that hold GPU tests (collecting all of tests/ would need every
        # dependency of the whole project on the device).
        if args.skip_pytest:
            report["pytest_gpu"] = {"skipped": "--skip-pytest"}
        else:
            files = sorted(
                str(f.relative_to(ROOT))
                for f in (ROOT / "tests").rglob("test_*.py")
                if re.search(r"mark\.gpu\b", f.read_text(errors="replace"))
            )
            out = runner.run(
                "pytest_gpu", [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files], caps["pytest_gpu"]
            )
            text = out if out is not None else runner.steps["pytest_gpu"].get("stderr_tail", "")
            summary = [ln for ln in (text or "").splitlines() if re.search(r"\b(passed|failed|skipped|error|deselected)\b", ln)]
            # rc 5: nothing collected/selected; still a result
            report["pytest_gpu"] = {"files": files, "rc": runner.steps["pytest_gpu"]["rc"], "summary": summary[-1] if summary else None}
            if out is None and log.exists():
                # the summary line of a failing run is on stdout: read it from the log
                tail = log.read_text().split("===== pytest_gpu", 1)[-1].splitlines()
                lines = [ln for ln in tail if re.search(r"\b(passed|failed|skipped|error)\b", ln)]
                report["pytest_gpu"]["summary"] = lines[-1] if lines else None

        rtd = [py, "benchmarks/realtime_diffusion.py", "--model", model, "--device", args.device, "--size", str(size)]
        rtd += ["--frames", str(frames), "--warmup", str(warmup), "--rounds", "2" if tiny else "3", "--json", "--threads", "0"]
        rtd += ["--t-index-list", "35"]  # one denoising step: the goals are for sd-turbo at 1 step
        results: list[dict[str, Any]] = []
        report["realtime"] = {}
        for backend in ("eager", "compile"):
            name = f"realtime_{backend}"
            if backend not in backends:
                runner.steps[name] = {"rc": None, "seconds": 0.0, "timed_out": False, "skipped": f"not in backends {','.join(backends)}"}
                got = None
            elif not have_models:
                runner.steps[name] = {"rc": None, "seconds": 0.0, "timed_out": False, "skipped": "models failed"}
                got = None
            else:
                got = _json_line(runner.run(name, [*rtd, "--streams", "1,4", "--backend", backend], caps[name]), prefix="")
            report["realtime"][backend] = got
            results += (got or {}).get("results", [])
        if have_models:
            got = _json_line(
                runner.run(
                    "realtime_controlnet",
                    [*rtd, "--streams", "1", "--backend", "eager", "--controlnets", "1", "--controlnet-ids", cn],
                    caps["realtime_controlnet"],
                ),
                prefix="",
            )
        else:
            runner.steps["realtime_controlnet"] = {"rc": None, "seconds": 0.0, "timed_out": False, "skipped": "models failed"}
            got = None
        report["controlnet"] = {"preprocessor": "canny (the depth model's own cost not included)", "result": got}

        ff_backend = "compile" if "compile" in backends else "eager"
        report["first_frame"] = {"backend": ff_backend}
        for phase in ("cold", "warm"):
            name = f"first_frame_{phase}"
            if not have_models or (tiny and phase == "warm"):
                why = "models failed" if not have_models else "--tiny: the cold phase only (the dry run stays under a minute)"
                runner.steps[name] = {"rc": None, "seconds": 0.0, "timed_out": False, "skipped": why}
                report["first_frame"][phase] = None
                continue
            env = {"GPU_CHECK_T0": repr(time.time())}
            report["first_frame"][phase] = _json_line(
                runner.run(name, [*me, "first-frame", model, args.device, str(size), ff_backend], caps["first_frame"], env=env)
            )

    one = _row(results, 1, "compile") or _row(results, 1, "eager")
    best_one = max((r["per_stream_fps"] for r in results if r.get("streams") == 1), default=None)
    best_four = max((r["per_stream_fps"] for r in results if r.get("streams") == 4), default=None)
    cn_rows = (report["controlnet"]["result"] or {}).get("results", [])
    ff = (report["first_frame"].get("warm") or report["first_frame"].get("cold") or {}).get("first_frame_s")

    def verdict(value: float | None, goal: float, lower_is_better: bool = False) -> dict[str, Any]:
        ok = None if value is None else (value < goal if lower_is_better else value >= goal)
        return {"value": value, "goal": goal, "met": ok}

    report["verdict"] = {
        "single_stream_fps": verdict(best_one, GOALS["single_stream_fps"]),
        "four_streams_per_stream_fps": verdict(best_four, GOALS["four_streams_per_stream_fps"]),
        "controlnet_fps": verdict(cn_rows[0]["per_stream_fps"] if cn_rows else None, GOALS["controlnet_fps"]),
        "first_frame_s": verdict(ff, GOALS["first_frame_s"], lower_is_better=True),
        "single_stream_latency_ms_p50": (one or {}).get("latency_ms_p50"),
    }
    report["measured"] = not tiny and args.device.startswith("cuda")
    report["steps"] = runner.steps
    report["total_s"] = round(time.monotonic() - t_start, 1)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["verdict"]), flush=True)
    print(f"[gpu_check] wrote {out_path} ({report['total_s']} s; log {log})", file=sys.stderr, flush=True)
    failed = [k for k, s in runner.steps.items() if s.get("rc") not in (0, None) and k != "pytest_gpu"]
    return 1 if failed or not have_models else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
