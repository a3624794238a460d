"""streamdiffusion reports its load as stages of the engine's `Progress` (the live status's
`loading` field and the log): the model load, then the warm-up frames one by one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipelines.live.streamdiffusion import StreamDiffusionPipeline
from pipelines.live.streamdiffusion_params import StreamDiffusionParams
from pipelines.progress import Progress


def test_load_reports_the_model_and_warm_up_stages(tiny_sd_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pipelines.progress")
    pipe = StreamDiffusionPipeline(device="cpu")
    pipe.progress = progress = Progress("live cam: streamdiffusion")
    try:
        pipe.load(StreamDiffusionParams(model_id=str(tiny_sd_dir), width=64, height=64))
    finally:
        pipe.close()
    ours = [r.getMessage() for r in caplog.records if r.name == "pipelines.progress"]
    started = [m for m in ours if " done in " not in m]
    assert started == ["live cam: streamdiffusion: load model", "live cam: streamdiffusion: warm-up (2)"]
    assert progress.snapshot() == {"stage": "warm-up", "progress": 1.0, "elapsed_s": pytest.approx(0, abs=60)}
