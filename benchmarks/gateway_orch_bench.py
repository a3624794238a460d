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
import sys
import time
from pathlib import Path

import aiohttp
from ._common import free_ports, p_ms

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
            print(f"{what} p50: direct {p_ms(d, 50):.2f} ms, via gateway {p_ms(g, 50):.2f} ms, added "
                  f"{p_ms(g, 50) - p_ms(d, 50):.2f} ms (p90 added {p_ms(g, 90) - p_ms(d, 90):.2f} ms)")  # fmt: skip
    costs = await _refresh_costs(orchestrator, requests)
    for name, values in costs.items():
        print(f"GetOrchestrator {name}: p50 {p_ms(values, 50):.2f} ms, p90 {p_ms(values, 90):.2f} ms ({len(values)} calls)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway_orch_bench")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv or [])
    grpc_port, http_port, gw = free_ports(3)
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
