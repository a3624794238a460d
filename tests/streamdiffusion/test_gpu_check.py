"""`benchmarks/gpu_check.sh --device cpu --tiny`: the GPU check's dry run on the CPU, so the
script cannot rot between the runs on a GPU machine (issue 32). Every step runs for real on the
tiny models (compile excepted: see gpu_check.py) and the one JSON has every field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_gpu_check_cpu_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    # No wheelhouse here: this interpreter already has everything.
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")}
    proc = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--budget", "150", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=175,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report) >= {
        "device", "torch", "tiny", "size", "frames", "budget_s", "goals", "measured", "models", "pytest_gpu",
        "realtime", "controlnet", "first_frame", "verdict", "steps", "total_s",
    }
    assert report["tiny"] is True and report["measured"] is False and report["size"] == "64x64"
    assert set(report["goals"]) == {"single_stream_fps", "four_streams_per_stream_fps", "controlnet_fps", "first_frame_s"}
    assert set(report["steps"]) == {
        "models", "pytest_gpu", "realtime_eager", "realtime_compile", "realtime_controlnet", "first_frame_cold", "first_frame_warm",
    }
    for name, step in report["steps"].items():
        assert {"rc", "seconds", "timed_out"} <= set(step), name
        assert step["timed_out"] is False, (name, step)
        assert step["rc"] == 0 or "skipped" in step, (name, step)
    assert report["steps"]["realtime_compile"]["skipped"]  # Inductor on a CPU: too slow for a dry run
    assert report["models"]["model_mb"] > 0 and report["models"]["controlnet_mb"] > 0
    assert report["pytest_gpu"]["rc"] == 0 and report["pytest_gpu"]["files"]
    assert "skipped" in report["pytest_gpu"]["summary"]  # no GPU here: the gpu tests skip, saying so
    rows = report["realtime"]["eager"]["results"]
    assert [(r["streams"], r["backend"]) for r in rows] == [(1, "eager"), (4, "eager")]
    for r in rows:
        assert r["per_stream_fps"] > 0 and r["latency_ms_p50"] <= r["latency_ms_p99"]
    [cn] = report["controlnet"]["result"]["results"]
    assert cn["controlnets"] == 1 and cn["per_stream_fps"] > 0
    cold = report["first_frame"]["cold"]
    assert cold["backend"] == "eager" and cold["output_shape"] == [1, 64, 64, 3]
    assert cold["first_frame_s"] >= cold["load_s"] > 0
    verdict = report["verdict"]
    for key, goal in report["goals"].items():
        assert verdict[key]["goal"] == goal and verdict[key]["value"] is not None, key
        assert verdict[key]["met"] in (True, False)
