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


def test_bench_batched_vs_per_stream_preprocessor_models(
    tiny_sd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--preprocessors models --batching on,off`: the depth ControlNet row twice, its model
    called once per tick for both streams and once per stream, every preprocessor served."""
    from benchmarks.realtime_diffusion import main
    from pipelines.live import preprocessor_batch
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    write_tiny_controlnet(tmp_path / "cn", seed=6)
    batched = preprocessor_batch.BATCHED
    argv = ["--model", str(tiny_sd_dir), "--controlnet-ids", str(tmp_path / "cn"), "--frames", "1", "--warmup", "1"]
    argv += ["--rounds", "1", "--streams", "2", "--backend", "eager", "--controlnets", "1"]
    main([*argv, "--preprocessors", "models", "--batching", "on,off", "--json"])
    assert preprocessor_batch.BATCHED is batched  # restored after the per-stream row
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert [(r["controlnets"], r["preprocessors"], r["batched"]) for r in rows] == [(1, "depth", True), (1, "depth", False)]
    assert all(r["aggregate_fps"] > 0 for r in rows)
