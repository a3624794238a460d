"""Live runner: `livestream serve --orch-addr ...` start → `ready` at a stand-in orchestrator, and
session reserve → first processed output segment through the orchestrator's proxy and public
trickle URLs (the stand-in of tests/liverunner). `python -m benchmarks liverunner_bench [--rounds N]`.

Apps: `noop`; `--streamdiffusion` adds `live-video-to-video/streamdiffusion`, whose runner
preloads the default model (stabilityai/sd-turbo) before it says `ready`: the benchmark writes a
tiny random-weight model with `livestream models tiny --task streamdiffusion` where that id
resolves under a `--model-dir` (MODEL_DIR/stabilityai/sd-turbo, as benchmarks/live_bench.py
does), so the runner loads it instead of the real weights, on the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "liverunner"))

from liverunner_standin import StandinOrchestrator  # noqa: E402

from livestream.live.testsrc import make_ts_segments  # noqa: E402
from livestream.liverunner.client import LiveRunnerClient  # noqa: E402
from trickle import TricklePublisher, TrickleSubscriber  # noqa: E402
from ._common import free_port


async def _round(
    model: str, params: dict[str, Any], segments: list[bytes], model_dir: Path | None = None
) -> tuple[float, float]:
    standin = StandinOrchestrator(interval="1s")
    await standin.start()
    port = free_port()
    cmd = [
        sys.executable, "-m", "livestream", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--orch-addr", standin.base, "--orch-secret", standin.orch_secret, "--runner-url", f"http://127.0.0.1:{port}",
        "--app", f"live-video-to-video/{model}", "--capacity", "1", "--rtmp-port", "0",
    ]  # fmt: skip
    if model_dir is not None:
        cmd += ["--model-dir", str(model_dir)]
    env = os.environ | {"LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not any(r.ready for r in standin.runners.values()):
            if proc.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError("the runner did not become ready")
            await asyncio.sleep(0.02)
        ready = time.monotonic() - started
        async with aiohttp.ClientSession() as http:
            t0 = time.monotonic()
            client = LiveRunnerClient(standin.base, http)
            session = await client.reserve((await client.discovery())[0])
            stream = await session.call("POST", "stream/start", {"params": params})
            first: asyncio.Future[float] = asyncio.get_running_loop().create_future()

            async def read() -> None:
                async with TrickleSubscriber(stream["output_url"], start_seq=0, session=http) as sub:
                    async for segment in sub:
                        if await segment.read():
                            first.set_result(time.monotonic() - t0)
                            return

            reader = asyncio.create_task(read())
            async with TricklePublisher(stream["input_url"], "video/mp2t", session=http) as pub:
                for data in segments:
                    async with pub.segment() as seg:
                        await seg.write(data)
                    if first.done():
                        break
                output = await asyncio.wait_for(first, 300)
            await reader
            await session.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        await standin.close()
    return ready, output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="liverunner_bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streamdiffusion", action="store_true", help="also streamdiffusion (a tiny random-weight model, CPU)")
    parser.add_argument("--only-streamdiffusion", action="store_true", help="streamdiffusion without noop")
    args = parser.parse_args(argv)
    segments = make_ts_segments(frames=90, width=128, height=128, audio=False, segment_seconds=0.5)
    apps: list[tuple[str, str, dict[str, Any], Path | None]] = [] if args.only_streamdiffusion else [("noop", "noop", {}, None)]
    if args.streamdiffusion or args.only_streamdiffusion:
        model_dir = Path(tempfile.mkdtemp()) / "models"
        tiny = model_dir / "stabilityai" / "sd-turbo"  # the default model id, resolved under --model-dir
        tiny.parent.mkdir(parents=True)
        cmd = [sys.executable, "-m", "livestream", "models", "tiny", "--task", "streamdiffusion", "--out", str(tiny)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ | {"HF_HUB_OFFLINE": "1"})
        apps.append(("streamdiffusion (tiny)", "streamdiffusion", {"t_index_list": [20, 35]}, model_dir))
    for label, model, params, mdir in apps:
        results = [asyncio.run(_round(model, params, segments, mdir)) for _ in range(args.rounds)]
        ready = [r for r, _ in results]
        first = [f for _, f in results]
        print(
            f"{label:24s} serve start → ready: median {statistics.median(ready):.2f} s ({', '.join(f'{r:.2f}' for r in ready)}); "
            f"reserve → first output segment: median {statistics.median(first):.2f} s ({', '.join(f'{f:.2f}' for f in first)})",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
