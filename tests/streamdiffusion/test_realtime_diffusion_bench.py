"""`benchmarks/realtime_diffusion.py --json`: exactly device, model and the six figures per row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_bench_json(tiny_sd_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.realtime_diffusion import main

    main(["--model", str(tiny_sd_dir), "--frames", "2", "--warmup", "1", "--streams", "1,2", "--backend", "eager", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) == {"device", "model", "results"}
    rows = report["results"]
    assert [(r["streams"], r["backend"]) for r in rows] == [(1, "eager"), (2, "eager")]
    for r in rows:
        assert set(r) == {"streams", "backend", "aggregate_fps", "per_stream_fps", "latency_ms_p50", "latency_ms_p99"}
        assert r["aggregate_fps"] > 0 and r["per_stream_fps"] > 0
        assert r["latency_ms_p50"] <= r["latency_ms_p99"]
    assert rows[1]["aggregate_fps"] == pytest.approx(2 * rows[1]["per_stream_fps"], rel=0.01)
