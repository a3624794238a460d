"""`benchmarks/realtime_diffusion.py` runs and prints the JSON shape parts 2 and 3 extend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_bench_json(tiny_sd_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.realtime_diffusion import main

    main(["--model", str(tiny_sd_dir), "--frames", "2", "--warmup", "1", "--streams", "1,2", "--no-baseline", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) >= {"device", "model", "results"}
    rows = report["results"]
    assert [r["streams"] for r in rows] == [1, 2]
    for r in rows:
        assert r["backend"] == "eager"
        assert r["aggregate_fps"] > 0 and r["per_stream_fps"] > 0
        assert r["latency_ms_p50"] <= r["latency_ms_p99"]
