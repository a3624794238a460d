"""A pass-through pipeline (`noop`) asked for another size resizes its frames without loading
torch: importing it on the pipeline thread at the first resized frame (seconds, ten and more on
a loaded machine) once stalled a runner's output long enough for the gateway to swap it out
(tests/gateway/test_gateway_live.py's failover test). Checked in a fresh interpreter, where torch
is not imported yet."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio, sys
from fractions import Fraction
import av, numpy as np
from livestream.live.frames import InputFrame
from livestream.live.pipeline_stage import PipelineStage
from pipelines.live import default_live_registry
from pipelines.live.noop import NoopParams

async def main() -> None:
    spec = default_live_registry().get("noop")
    stage = PipelineStage(spec, name="resize", max_restarts=0, report=print, emit=lambda event: None)
    await stage.load(NoopParams(width=96, height=64))
    try:
        frames = [InputFrame(av.VideoFrame.from_ndarray(np.full((128, 128, 3), 200, np.uint8), format="rgb24"),
                             n * 3000, Fraction(1, 90000)) for n in range(3)]
        out = await stage.process(frames)
        sizes = {(o.frame.width, o.frame.height) for o in out}
        pixel = out[0].frame.to_ndarray(format="rgb24")[32, 48].tolist()
        print(len(out), sorted(sizes), pixel, "torch" in sys.modules)
    finally:
        await stage.close(10.0)

asyncio.run(main())
"""


def test_noop_resizes_without_torch() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("3 [(96, 64)]"), last  # every frame out, at the asked size
    assert "[200, 200, 200]" in last, last  # the picture itself, resized
    assert last.endswith("False"), f"torch was imported for a pass-through resize: {last}"
