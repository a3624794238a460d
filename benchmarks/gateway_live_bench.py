"""Live streams through the gateway: runner death → output resumed at the viewer, the relay
hop's added latency, and the gateway's CPU per relayed stream.

Two noop runner processes (`livestream serve`, PIPELINE=live-video-to-video) behind a gateway
(in this process) on loopback; 1-second MPEG-TS segments published at real-time pace to the
gateway; a viewer reads `{stream}-out` from the gateway over HTTP. For each round the serving
runner is SIGKILLed and the time to the viewer's next output bytes is taken (after each swap the
killed runner is restarted and the swap window cleared, so every round swaps).

The relay hop: a second reader takes the runner's own `{mid}-out` channel (the bytes as the
runner POSTs them) and the viewer `{stream}-out`; per segment, the difference of their first
bytes' arrival is the hop. CPU: this process's CPU seconds per wall second while relaying
(gateway + the publisher and both readers, so an upper bound for the gateway alone).

    python -m benchmarks gateway_live_bench [--rounds 3] [--health-interval 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from livestream.gateway import GatewayConfig, RunnerConfig, build_gateway_app
from livestream.gateway.live_routes import LIVE_KEY
from livestream.live.testsrc import make_ts_segments
from trickle import TricklePublisher, TrickleSubscriber


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runner(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE", "MODEL_ID", "AUTH_TOKEN")}
    env.update(PIPELINE="live-video-to-video", MODEL_ID="noop", HOST="127.0.0.1", PORT=str(port), MODEL_DIR=str(tmp),
               HF_HUB_OFFLINE="1")  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "livestream", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


async def _idle(http: aiohttp.ClientSession, url: str) -> None:
    while True:
        try:
            async with http.get(url + "/health") as resp:
                if resp.status == 200 and (await resp.json())["status"] == "IDLE":
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)


async def _main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gwlive-"))
    ports = [_port(), _port()]
    procs = {p: _runner(tmp, p) for p in ports}
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(_idle(http, u) for u in urls))
        config = GatewayConfig(runners=tuple(RunnerConfig(u) for u in urls), refresh_interval=1.0, random_share=0.0,
                               live_health_interval=args.health_interval, live_max_swaps=1000,
                               live_suspension_penalty=1)  # fmt: skip
        app = build_gateway_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        gw_port = _port()
        await web.TCPSite(runner, "127.0.0.1", gw_port).start()
        gw = f"http://127.0.0.1:{gw_port}"
        live = app[LIVE_KEY]
        form = aiohttp.FormData({"source_id": "b", "source_type": "rtmpconn", "query": ""})
        async with http.post(f"{gw}/live/video-to-video/bench/start", data=form) as resp:
            started = await resp.json()
        stream = live.get("bench")
        assert stream is not None
        segments = make_ts_segments(frames=30 * 20, width=256, height=144, audio=False)
        viewer_first: dict[int, float] = {}
        arrivals: list[float] = []

        async def publish() -> None:
            async with TricklePublisher(started["publish_url"], "video/mp2t", session=http) as pub:
                i = 0
                while True:
                    t0 = time.monotonic()
                    async with pub.segment() as w:
                        await w.write(segments[i % len(segments)])
                    i += 1
                    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

        async def view() -> None:
            async with TrickleSubscriber(started["subscribe_url"], start_seq=0, session=http) as sub:
                async for seg in sub:
                    first = True
                    async for _ in seg:
                        now = time.monotonic()
                        arrivals.append(now)
                        if first:
                            viewer_first[seg.seq] = now
                            first = False

        async def hop(samples: list[float]) -> None:
            """First bytes of each segment on the runner's channel vs at the viewer."""
            attempt = stream.attempt
            assert attempt is not None
            async with TrickleSubscriber(f"{gw}/ai/trickle/{attempt.mid}-out", start_seq=-1, session=http) as sub:
                for _ in range(6):
                    seg = await sub.next_segment()
                    if seg is None:
                        return
                    t = time.monotonic()
                    before = set(viewer_first)
                    await seg.read()
                    new = [viewer_first[s] for s in set(viewer_first) - before]
                    if new:
                        samples.append(min(new) - t)

        tasks = [asyncio.create_task(publish()), asyncio.create_task(view())]
        while len(arrivals) < 5:
            await asyncio.sleep(0.1)
        hops: list[float] = []
        cpu0, wall0 = time.process_time(), time.monotonic()
        await hop(hops)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        gaps: list[float] = []
        for _ in range(args.rounds):
            attempt = stream.attempt
            assert attempt is not None
            port = int(attempt.backend.url.rsplit(":", 1)[1])
            swaps = stream.swaps
            killed = time.monotonic()
            procs[port].send_signal(signal.SIGKILL)
            while stream.swaps == swaps:
                await asyncio.sleep(0.01)
            while not arrivals or arrivals[-1] <= killed + 0.0:
                await asyncio.sleep(0.005)
            resumed = next(t for t in arrivals if t > killed)
            gaps.append(resumed - killed)
            print(f"runner killed → output resumed at the viewer: {gaps[-1]:.3f} s ({stream.swap_log[-1]['reason']})")
            procs[port].wait()
            procs[port] = _runner(tmp, port)
            await _idle(http, attempt.backend.url)
            attempt.backend.penalty = 0
            await asyncio.sleep(2.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
    for p in procs.values():
        p.send_signal(signal.SIGINT)
        p.wait(10)
    print(f"runner death → output resumed: median {statistics.median(gaps):.3f} s, max {max(gaps):.3f} s over {len(gaps)}")
    if hops:
        print(f"relay hop (runner channel → viewer, first bytes): p50 {statistics.median(hops) * 1000:.2f} ms over {len(hops)}")
    print(f"CPU of gateway + publisher + 2 readers, 1 stream: {cpu * 100:.1f}% of a core")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--health-interval", type=float, default=0.25)
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
