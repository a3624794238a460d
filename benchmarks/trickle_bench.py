"""Trickle on loopback: throughput against a bare aiohttp relay, first-byte latency, fan-out.

    python -m benchmarks trickle_bench

The server runs in a child process (as it would in production, apart from its clients); the
publisher and subscribers share the parent's event loop.

(a) throughput: one publisher -> server -> one subscriber, 8 MiB segments, compared with a bare
    aiohttp relay (one streaming POST piped into one streaming GET) in the same run.
(b) first-byte latency: time from `segment.write()` to the subscriber holding those bytes.
(c) fan-out: one publisher at 2 Mbit/s in 0.5 s segments to 100 subscribers; every subscriber
    must receive every segment, and finish it less than one segment duration after the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import psutil
from aiohttp import web

from trickle import TricklePublisher, TrickleServer, TrickleServerConfig, TrickleSubscriber
from ._common import percentile

__all__ = ["main"]

MiB = 1024 * 1024
CHUNK = 64 * 1024


# --- the server process ----------------------------------------------------------------------


def _relay_routes(app: web.Application) -> None:
    """A bare streaming relay: POST /relay/{id} is piped straight into GET /relay/{id}."""
    queues: dict[str, asyncio.Queue[bytes]] = {}

    def queue(key: str) -> asyncio.Queue[bytes]:
        return queues.setdefault(key, asyncio.Queue(maxsize=64))

    async def relay_post(request: web.Request) -> web.Response:
        q = queue(request.match_info["id"])
        async for chunk in request.content.iter_any():
            await q.put(chunk)
        await q.put(b"")
        return web.Response()

    async def relay_get(request: web.Request) -> web.StreamResponse:
        q = queue(request.match_info["id"])
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        while chunk := await q.get():
            await response.write(chunk)
        await response.write_eof()
        return response

    app.router.add_post("/relay/{id}", relay_post)
    app.router.add_get("/relay/{id}", relay_get)


def _serve(port: int) -> None:
    app = web.Application()
    TrickleServer(TrickleServerConfig(autocreate=True, max_segment_bytes=64 * MiB)).setup(app, "/")
    _relay_routes(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


@contextlib.asynccontextmanager
async def _server_process() -> AsyncIterator[tuple[str, psutil.Process]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    process.start()
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/none/next"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        assert process.pid is not None
        yield base, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.join(10)


def _session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=None)
    )


# --- (a) throughput --------------------------------------------------------------------------


async def _relay_throughput(base: str, total: int) -> float:
    chunk = os.urandom(CHUNK)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // CHUNK):
            yield chunk

    async with _session() as session:
        start = time.perf_counter()
        poster = asyncio.create_task(session.post(f"{base}/relay/a", data=body()))
        received = 0
        async with session.get(f"{base}/relay/a") as response:
            async for data in response.content.iter_any():
                received += len(data)
        (await poster).release()
        elapsed = time.perf_counter() - start
    assert received == total, (received, total)
    return total / elapsed


async def _trickle_throughput(base: str, total: int, segment_bytes: int) -> float:
    chunk = os.urandom(CHUNK)
    url = f"{base}/throughput"
    segments = total // segment_bytes
    async with _session() as session:
        async with TricklePublisher(url, "video/MP2T", session=session) as publisher:
            await _wait_channel(session, url)
            async with TrickleSubscriber(url, start_seq=0, session=session) as subscriber:

                async def consume() -> int:
                    received = 0
                    for _ in range(segments):
                        segment = await subscriber.next_segment()
                        assert segment is not None
                        async for data in segment:
                            received += len(data)
                    return received

                start = time.perf_counter()
                reader = asyncio.create_task(consume())
                for _ in range(segments):
                    async with publisher.segment() as segment:
                        for _ in range(segment_bytes // CHUNK):
                            await segment.write(chunk)
                received = await reader
                elapsed = time.perf_counter() - start
    assert received == total, (received, total)
    return total / elapsed


async def _wait_channel(session: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(10):
        while True:
            async with session.get(f"{url}/next") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.01)


# --- (b) first-byte latency ------------------------------------------------------------------


async def _first_byte_latency(base: str, count: int) -> list[float]:
    url = f"{base}/latency"
    payload = b"\x47" + bytes(187)  # one MPEG-TS packet
    latencies: list[float] = []
    async with _session() as session:
        async with TricklePublisher(url, "video/MP2T", session=session) as publisher:
            await _wait_channel(session, url)
            async with TrickleSubscriber(url, start_seq=0, session=session) as subscriber:
                for _ in range(count):
                    waiting = asyncio.create_task(_first_chunk(subscriber))
                    await asyncio.sleep(0.02)  # segments are apart in time; the preconnects settle
                    async with publisher.segment() as segment:
                        start = time.perf_counter()
                        await segment.write(payload)
                        received_at, data = await waiting
                        latencies.append(received_at - start)
                        assert data == payload
    return latencies


async def _relay_latency(base: str, count: int) -> list[float]:
    """Baseline for (b): a chunk through the bare relay's already-open POST and GET."""
    outgoing: asyncio.Queue[bytes] = asyncio.Queue()
    payload = b"\x47" + bytes(187)

    async def body() -> AsyncIterator[bytes]:
        while chunk := await outgoing.get():
            yield chunk

    latencies: list[float] = []
    async with _session() as session:
        poster = asyncio.create_task(session.post(f"{base}/relay/latency", data=body()))
        outgoing.put_nowait(payload)
        async with session.get(f"{base}/relay/latency") as response:
            await response.content.readexactly(len(payload))
            for _ in range(count):
                await asyncio.sleep(0.002)
                start = time.perf_counter()
                outgoing.put_nowait(payload)
                await response.content.readexactly(len(payload))
                latencies.append(time.perf_counter() - start)
            outgoing.put_nowait(b"")
            await response.read()
        (await poster).release()
    return latencies


async def _first_chunk(subscriber: TrickleSubscriber) -> tuple[float, bytes]:
    segment = await subscriber.next_segment()
    assert segment is not None
    data = await segment.__anext__()
    return time.perf_counter(), data


# --- (c) fan-out -----------------------------------------------------------------------------


@dataclass
class FanOut:
    subscribers: int
    segments: int
    complete: int
    max_lag: float
    p99_lag: float
    server_cpu: float
    client_cpu: float
    wall: float


async def _fan_out(base: str, server: psutil.Process, subscribers: int, segments: int) -> FanOut:
    url = f"{base}/fanout"
    bitrate = 2_000_000 / 8  # bytes per second
    seg_seconds = 0.5
    writes_per_segment = 20
    chunk = os.urandom(int(bitrate * seg_seconds / writes_per_segment))
    seg_size = len(chunk) * writes_per_segment
    finished_at: dict[int, float] = {}
    lags: list[float] = []
    got: list[list[int]] = [[] for _ in range(subscribers)]

    async with _session() as session:
        async with TricklePublisher(url, "video/MP2T", session=session) as publisher:
            await _wait_channel(session, url)

            async def follow(index: int) -> None:
                async with TrickleSubscriber(url, start_seq=0, session=session) as subscriber:
                    for _ in range(segments):
                        segment = await subscriber.next_segment()
                        if segment is None:
                            return
                        size = len(await segment.read())
                        done = time.perf_counter()
                        if size == seg_size:
                            got[index].append(segment.seq)
                        lags.append(done - finished_at.get(segment.seq, done))

            readers = [asyncio.create_task(follow(i)) for i in range(subscribers)]
            await asyncio.sleep(0.5)  # every subscriber waits on seq 0
            me = psutil.Process()
            server_before, client_before = server.cpu_times(), me.cpu_times()
            start = time.perf_counter()
            for seq in range(segments):
                async with publisher.segment() as segment:
                    for i in range(writes_per_segment):
                        await segment.write(chunk)
                        await asyncio.sleep(max(0.0, start + seq * seg_seconds + (i + 1) * seg_seconds / writes_per_segment - time.perf_counter()))
                finished_at[seq] = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*readers), 30)
            wall = time.perf_counter() - start
            server_after, client_after = server.cpu_times(), me.cpu_times()
    complete = sum(1 for seqs in got if seqs == list(range(segments)))
    ordered = sorted(lags)
    return FanOut(
        subscribers=subscribers,
        segments=segments,
        complete=complete,
        max_lag=ordered[-1],
        p99_lag=ordered[int(len(ordered) * 0.99) - 1],
        server_cpu=(sum(server_after[:2]) - sum(server_before[:2])) / wall,
        client_cpu=(sum(client_after[:2]) - sum(client_before[:2])) / wall,
        wall=wall,
    )


# --- report ----------------------------------------------------------------------------------


async def _run() -> None:
    total = 192 * MiB
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}; server in a child process"
    )
    async with _server_process() as (base, server):
        relays: list[float] = []
        trickles: list[float] = []
        for _ in range(3):  # interleaved, so both see the same machine load
            relays.append(await _relay_throughput(base, total))
            trickles.append(await _trickle_throughput(base, total, 8 * MiB))
        relay, trickle = max(relays), max(trickles)
        print(f"(a) throughput, {total // MiB} MiB in 64 KiB writes (best of 3, interleaved):")
        print(f"    bare aiohttp relay      {relay / MiB:8.1f} MiB/s")
        print(f"    trickle, 8 MiB segments {trickle / MiB:8.1f} MiB/s  ratio {trickle / relay:.2f}")
        latencies = await _first_byte_latency(base, 300)
        baseline = await _relay_latency(base, 300)
        print(f"(b) first-byte latency, write -> subscriber read, {len(latencies)} samples:")
        print(
            f"    trickle, first bytes of a new segment  p50 {statistics.median(latencies) * 1e3:.2f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1e3:.2f} ms"
        )
        print(
            f"    bare relay, chunk on an open stream    p50 {statistics.median(baseline) * 1e3:.2f} ms, "
            f"p99 {percentile(baseline, 0.99) * 1e3:.2f} ms"
        )
        fan = await _fan_out(base, server, subscribers=100, segments=20)
        print(
            f"(c) fan-out, 1 publisher at 2 Mbit/s in 0.5 s segments to {fan.subscribers} subscribers, "
            f"{fan.segments} segments over {fan.wall:.1f} s:"
        )
        print(f"    subscribers with every segment complete: {fan.complete}/{fan.subscribers}")
        print(f"    lag behind the publisher's segment end: p99 {fan.p99_lag * 1e3:.1f} ms, max {fan.max_lag * 1e3:.1f} ms")
        print(f"    CPU: server process {fan.server_cpu * 100:.0f}% of a core, clients {fan.client_cpu * 100:.0f}%")


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    sys.exit(main())
