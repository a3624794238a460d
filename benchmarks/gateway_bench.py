"""Gateway overhead: latency added per batch request, throughput, LLM time to first token, and
how selection spreads load over 10 runners. Runners (fake, answering at once), the gateway and
the client each run in their own process on loopback.

    python -m benchmarks gateway_bench [--requests 400] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from pathlib import Path

import aiohttp
from ._common import free_ports, p_ms

T2I = {"prompt": "x", "model_id": "m"}
LLM = {"messages": [{"role": "user", "content": "hi"}], "model": "tiny", "stream": True}


def _serve_runners(ports: list[int], stream_gap: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gateway"))
    from aiohttp import web
    from gateway_fleet import FakeRunner

    async def main() -> None:
        for port in ports:
            runner = web.AppRunner(FakeRunner(str(port), stream_gap=stream_gap).app(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_gateway(port: int, runner_ports: list[int]) -> None:
    import logging

    from aiohttp import web

    from livestream.gateway import GatewayConfig, RunnerConfig, build_gateway_app

    logging.disable(logging.WARNING)
    config = GatewayConfig(runners=tuple(RunnerConfig(f"http://127.0.0.1:{p}") for p in runner_ports))
    web.run_app(build_gateway_app(config), host="127.0.0.1", port=port, print=None, access_log=None)


async def _wait_up(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with session.get(f"{url}/health") as resp:
                if resp.status == 200 and (await resp.json()).get("status", "OK") == "OK":
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def _latencies(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(f"{url}/text-to-image", json=T2I) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append(time.perf_counter() - t0)
    return out


async def _throughput(session: aiohttp.ClientSession, url: str, seconds: float, concurrency: int = 16) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            async with session.post(f"{url}/text-to-image", json=T2I) as resp:
                await resp.read()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


async def _ttft(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(f"{url}/llm", json=LLM) as resp:
            await resp.content.readany()
            out.append(time.perf_counter() - t0)
            await resp.read()
    return out


async def _run(requests: int, seconds: float, gw_url: str, direct: str, gw10_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for url in (direct, gw_url, gw10_url):
            await _wait_up(session, url)
        for _ in range(200):  # every runner found by a discovery round (every 5 s)
            async with session.get(f"{gw10_url}/backends") as resp:
                if all(b["state"] == "up" for b in (await resp.json())["backends"]):
                    break
            await asyncio.sleep(0.1)
        await _latencies(session, direct, 50)  # warm up
        await _latencies(session, gw_url, 50)
        d, g = await _latencies(session, direct, requests), await _latencies(session, gw_url, requests)
        print(f"batch latency p50: direct {p_ms(d, 50):.2f} ms, via gateway {p_ms(g, 50):.2f} ms, "
              f"added {p_ms(g, 50) - p_ms(d, 50):.2f} ms (p90 added {p_ms(g, 90) - p_ms(d, 90):.2f} ms)")  # fmt: skip
        td, tg = await _throughput(session, direct, seconds), await _throughput(session, gw_url, seconds)
        print(f"no-model route throughput (16 in flight): direct {td:.0f} req/s, via gateway {tg:.0f} req/s")
        fd, fg = await _ttft(session, direct, 50), await _ttft(session, gw_url, 50)
        print(f"LLM time to first token p50: direct {p_ms(fd, 50):.2f} ms, via gateway {p_ms(fg, 50):.2f} ms, "
              f"added {p_ms(fg, 50) - p_ms(fd, 50):.2f} ms")  # fmt: skip
        t10 = await _throughput(session, gw10_url, seconds)
        async with session.get(f"{gw10_url}/metrics") as resp:
            text = await resp.text()
        lines = [ln for ln in text.splitlines() if ln.startswith("livestream_gateway_backend_requests_total{")]
        counts = [int(float(ln.rsplit(" ", 1)[1])) for ln in lines if 'outcome="ok"' in ln]
        print(f"10 runners via gateway: {t10:.0f} req/s; requests per runner: {sorted(counts)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway_bench")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv or [])
    ports = free_ports(14)
    one, ten, gw1, gw10 = ports[0], ports[1:11], ports[11], ports[12]
    procs = [
        mp.Process(target=_serve_runners, args=([one], 0.02), daemon=True),
        mp.Process(target=_serve_runners, args=(ten, 0.02), daemon=True),
        mp.Process(target=_serve_gateway, args=(gw1, [one]), daemon=True),
        mp.Process(target=_serve_gateway, args=(gw10, ten), daemon=True),
    ]
    for p in procs:
        p.start()
    try:
        asyncio.run(_run(args.requests, args.seconds, f"http://127.0.0.1:{gw1}", f"http://127.0.0.1:{one}",
                         f"http://127.0.0.1:{gw10}"))  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
