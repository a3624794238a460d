"""Gateway to go-livepeer orchestrators: latency the gateway adds in front of an orchestrator,
and the cost of a GetOrchestrator refresh. The stand-in orchestrator of the tests
(`tests/gateway/standin_orchestrator.py`: gRPC + TLS + the job routes, answering at once), the
gateway and the client each run in their own process on loopback.

"Direct" is what a client that speaks the orchestrator protocol itself does per job: POST to the
transcoder URL with the job headers (token from one GetOrchestrator), and for text-to-image also
GET the image URL the orchestrator answers with (the gateway fetches and re-serves it).

    python -m benchmarks gateway_orch_bench [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import aiohttp

T2I = {"prompt": "x", "model_id": "m"}
LLM = {"messages": [{"role": "user", "content": "hi"}], "model": "m"}


def _serve_orchestrator(grpc_port: int, http_port: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gateway"))
    import threading

    from gateway_fleet import LoopThread
    from standin_orchestrator import StandInOrchestrator

    StandInOrchestrator(grpc_port=grpc_port, http_port=http_port).start(LoopThread())
    threading.Event().wait()


def _serve_gateway(port: int, orchestrator: str) -> None:
    import logging

    from aiohttp import web

    from livestream.gateway import GatewayConfig, build_gateway_app

    logging.disable(logging.WARNING)
    config = GatewayConfig(orchestrators=(orchestrator,))
    web.run_app(build_gateway_app(config), host="127.0.0.1", port=port, print=None, access_log=None)


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def _via_gateway(session: aiohttp.ClientSession, url: str, path: str, body: dict[str, object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(url + path, json=body) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append(time.perf_counter() - t0)
    return out


async def _direct(session: aiohttp.ClientSession, orchestrator: str, path: str, body: dict[str, object], n: int) -> list[float]:
    from livestream.gateway.orchestrator import OrchestratorLink, Pins

    link = OrchestratorLink(orchestrator, Pins(), 5.0)
    info = await link.get_info()
    ssl = await link.job_ssl(info.transcoder)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        headers = info.job_headers(path.strip("/"), "m")
        async with session.post(info.transcoder + path, json=body, headers=headers, ssl=ssl) as resp:
            data = await resp.json()
            assert resp.status == 200, resp.status
        for image in data.get("images", []):
            async with session.get(image["url"], ssl=ssl) as resp:
                await resp.read()
        out.append(time.perf_counter() - t0)
    link.close()
    return out


async def _refresh_costs(orchestrator: str, n: int) -> dict[str, list[float]]:
    from livestream.gateway.orchestrator import OrchestratorLink, Pins

    pins = Pins()
    link = OrchestratorLink(orchestrator, pins, 5.0)
    await link.get_info()
    costs: dict[str, list[float]] = {"refresh": [], "grpc": [], "cold": []}
    for _ in range(n):  # what a discovery round or a due token costs: certificate check + gRPC
        t0 = time.perf_counter()
        await link.get_info()
        costs["refresh"].append(time.perf_counter() - t0)
    stub = link._stub(pins.get(link.host, link.port))
    for _ in range(n):  # the gRPC call alone, on the open channel
        t0 = time.perf_counter()
        link._call(stub)
        costs["grpc"].append(time.perf_counter() - t0)
    link.close()
    for _ in range(max(n // 10, 5)):  # a new channel: TCP + TLS + HTTP/2 set-up first
        fresh = OrchestratorLink(orchestrator, pins, 5.0)
        t0 = time.perf_counter()
        await fresh.get_info()
        costs["cold"].append(time.perf_counter() - t0)
        fresh.close()
    return costs


async def _run(requests: int, gw_url: str, orchestrator: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{gw_url}/health") as resp:
                    if (await resp.json()).get("status") == "OK":
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        for path, body, what in (("/llm", LLM, "llm (JSON answer)"), ("/text-to-image", T2I, "text-to-image (+ image fetch)")):
            await _direct(session, orchestrator, path, body, 30)  # warm up
            await _via_gateway(session, gw_url, path, body, 30)
            d = await _direct(session, orchestrator, path, body, requests)
            g = await _via_gateway(session, gw_url, path, body, requests)
            print(f"{what} p50: direct {_p(d, 50):.2f} ms, via gateway {_p(g, 50):.2f} ms, added "
                  f"{_p(g, 50) - _p(d, 50):.2f} ms (p90 added {_p(g, 90) - _p(d, 90):.2f} ms)")  # fmt: skip
    costs = await _refresh_costs(orchestrator, requests)
    for name, values in costs.items():
        print(f"GetOrchestrator {name}: p50 {_p(values, 50):.2f} ms, p90 {_p(values, 90):.2f} ms ({len(values)} calls)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway_orch_bench")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv or [])
    grpc_port, http_port, gw = _free_ports(3)
    orchestrator = f"https://127.0.0.1:{grpc_port}"
    procs = [
        mp.Process(target=_serve_orchestrator, args=(grpc_port, http_port), daemon=True),
        mp.Process(target=_serve_gateway, args=(gw, orchestrator), daemon=True),
    ]
    procs[0].start()
    time.sleep(1.0)  # the orchestrator first: the gateway's first round finds it up
    procs[1].start()
    try:
        asyncio.run(_run(args.requests, f"http://127.0.0.1:{gw}", orchestrator))
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
