"""HTTP overhead of the engine's full stack on a no-model route, against a bare aiohttp handler.

Both servers run on loopback, each in its own process, in the same run: the engine app as
`livestream serve` builds it (`build_app`: CORS on, error middleware, trickle server, live
manager, every route) answering `GET /health`, and a bare `web.Application` with one handler
returning the same JSON body. One client process measures, alternating the two servers over
several rounds:

- latency: sequential keep-alive requests, p50/p99;
- throughput: requests/s with 16 concurrent keep-alive connections;
- server CPU time per request (user + system, read with psutil around each measurement): the
  figure least disturbed by other load on a shared machine.

Goal: the engine adds under 1 ms at p50.

    .venv/bin/python -m benchmarks http_overhead
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from ._common import percentile

__all__ = ["main"]

ROUNDS = 5
WARMUP = 300
SEQUENTIAL = 3000
CONCURRENCY = 16
CONCURRENT_REQUESTS = 6000
PATH = "/health"


def _server_main(kind: str, conn: multiprocessing.connection.Connection) -> None:
    """Run one server on 127.0.0.1 (random port), report the port, serve until killed."""
    import logging

    from aiohttp import web

    logging.basicConfig(level=logging.WARNING)

    if kind == "engine":
        from livestream.app import build_app
        from livestream.settings import Settings

        app = build_app(Settings(cors_origins=("http://localhost:3000",)))
    else:
        body = b'{"status": "OK"}'

        async def health(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        app = web.Application()
        app.router.add_get(PATH, health)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        conn.send(port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())


@dataclass
class Result:
    p50_ms: float
    p99_ms: float
    seq_rps: float
    conc_rps: float
    cpu_us: float


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def _measure(port: int, pid: int) -> Result:
    import aiohttp

    url = f"http://127.0.0.1:{port}{PATH}"
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")

        for _ in range(WARMUP):
            await one()
        times: list[float] = []
        cpu_started = _cpu_seconds(pid)
        started = time.perf_counter()
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            await one()
            times.append(time.perf_counter() - t0)
        seq_elapsed = time.perf_counter() - started
        times.sort()

        remaining = CONCURRENT_REQUESTS

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        conc_elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(pid) - cpu_started
    return Result(
        p50_ms=percentile(times, 0.50) * 1e3,
        p99_ms=percentile(times, 0.99) * 1e3,
        seq_rps=SEQUENTIAL / seq_elapsed,
        conc_rps=CONCURRENT_REQUESTS / conc_elapsed,
        cpu_us=cpu / (SEQUENTIAL + CONCURRENT_REQUESTS) * 1e6,
    )


def _start(ctx: multiprocessing.context.SpawnContext, kind: str) -> tuple[multiprocessing.process.BaseProcess, int]:
    """Start one server process; returns it and its port."""
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server_main, args=(kind, child), daemon=True, name=f"http-overhead-{kind}")
    proc.start()
    if not parent.poll(120):
        proc.kill()
        raise RuntimeError(f"{kind} server did not start")
    return proc, int(parent.recv())


def _median(results: list[Result]) -> Result:
    return Result(
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        seq_rps=statistics.median(r.seq_rps for r in results),
        conc_rps=statistics.median(r.conc_rps for r in results),
        cpu_us=statistics.median(r.cpu_us for r in results),
    )


def main() -> None:
    ctx = multiprocessing.get_context("spawn")
    servers = {kind: _start(ctx, kind) for kind in ("bare", "engine")}
    results: dict[str, list[Result]] = {"bare": [], "engine": []}
    try:
        for _ in range(ROUNDS):
            for kind in ("bare", "engine"):
                proc, port = servers[kind]
                assert proc.pid is not None
                results[kind].append(asyncio.run(_measure(port, proc.pid)))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.join(10)
    bare, engine = _median(results["bare"]), _median(results["engine"])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"GET {PATH}, median of {ROUNDS} rounds; {SEQUENTIAL} sequential + {CONCURRENT_REQUESTS} at concurrency {CONCURRENCY}"
    )
    print(f"{'server':<8} {'p50 ms':>8} {'p99 ms':>8} {'seq req/s':>10} {'req/s @16':>10} {'CPU us/req':>11}")
    for name, r in (("bare", bare), ("engine", engine)):
        print(
            f"{name:<8} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {r.seq_rps:>10.0f} {r.conc_rps:>10.0f} {r.cpu_us:>11.0f}"
        )
    overhead = engine.p50_ms - bare.p50_ms
    print(
        f"engine/bare: p50 x{engine.p50_ms / bare.p50_ms:.2f} ({overhead * 1e3:+.0f} us), "
        f"p99 x{engine.p99_ms / bare.p99_ms:.2f}, req/s @16 x{engine.conc_rps / bare.conc_rps:.2f}, "
        f"server CPU/req x{engine.cpu_us / bare.cpu_us:.2f} ({engine.cpu_us - bare.cpu_us:+.0f} us); "
        f"goal p50 overhead < 1 ms: {'met' if overhead < 1.0 else 'NOT met'}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
