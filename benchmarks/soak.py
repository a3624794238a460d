"""Soak: live session start/stop cycles and batch requests; resources must stay flat.

    .venv/bin/python -m benchmarks soak [--cycles 1000] [--batch 10000] [--concurrency 2] [--no-docs]

One engine (`build_app`, real HTTP on loopback) runs `--cycles` live sessions one after another,
three kinds in turn: a noop session over trickle (go-livepeer's side played by a trickle server
in the same process: start, one MPEG-TS segment, input closed), an RTMP publish (handshake,
connect, publish, a few H.264 tags, unpublish), and a session started and stopped by `DELETE`
before any input. Then `--batch` text-to-image requests on the tiny random-weight model (one
step; nine 8x8 requests to one 64x64, `BATCH_SIZES`) from `--concurrency` clients (default 2). Every `--sample` cycles (or requests) it records resident memory, open file
descriptors, threads and asyncio tasks; the report gives each one's least-squares slope per
1,000 cycles (requests) after the first tenth (warm-up: caches, pools, the model load), the
first and last samples, and the RSS slope over the first and the last third (a leak keeps its
slope, allocator growth flattens). The live run also counts the objects the garbage collector
tracks, by type, at a tenth and at the end, and RSS before and after glibc's `malloc_trim(0)`
(docs/benchmarks.md, "soak", reads them). `tests/reliability/test_soak.py` runs 50 of each in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass
class Sample:
    n: int
    rss_mib: float
    fds: int
    threads: int
    tasks: int


@dataclass
class Series:
    name: str
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    failures: int = 0
    #: Findings printed under the table (object census, RSS after `malloc_trim`).
    notes: list[str] = field(default_factory=list)

    def take(self, n: int) -> None:
        self.samples.append(_sample(n))

    def slopes(self) -> dict[str, float]:
        """Least-squares slope per 1,000 units of each resource, after the first tenth."""
        pts = [s for s in self.samples if s.n >= (self.samples[-1].n // 10 if self.samples else 0)]
        return {key: _slope(pts, key) for key in ("rss_mib", "fds", "threads", "tasks")}

    def rss_thirds(self) -> tuple[float, float]:
        """The RSS slope (MiB per 1,000) over the first and over the last third of the run: a leak
        keeps its slope, an allocator that fills its arenas flattens."""
        end = self.samples[-1].n if self.samples else 0
        first = [s for s in self.samples if s.n <= end / 3]
        last = [s for s in self.samples if s.n >= 2 * end / 3]
        return _slope(first, "rss_mib"), _slope(last, "rss_mib")


def _slope(pts: list[Sample], key: str) -> float:
    xs = [float(s.n) for s in pts]
    ys = [float(getattr(s, key)) for s in pts]
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _census() -> Counter[str]:
    """Live objects the collector tracks, by type (PyAV containers and codec contexts, aiohttp
    sessions, SSL contexts and threads are all tracked)."""
    gc.collect()
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def _grown(before: Counter[str], after: Counter[str], top: int = 8) -> str:
    diff = sorted(((after[k] - before[k], k) for k in after.keys() | before.keys()), reverse=True)
    grown = [f"{k} {d:+d}" for d, k in diff[:top] if d > 0]
    return ", ".join(grown) or "none"


def _native(counts: Counter[str]) -> dict[str, int]:
    """Objects that hold native memory: PyAV's (containers, codec contexts, frames), aiohttp
    client sessions, SSL contexts, threads (and the rest of `threading`)."""
    prefixes = {"PyAV": "av.", "ClientSession": "aiohttp.client.ClientSession", "SSLContext": "ssl.SSLContext", "threading objects": "threading."}
    return {name: sum(n for k, n in counts.items() if k.startswith(prefix)) for name, prefix in prefixes.items()}


def _malloc_trim() -> bool:
    """glibc's `malloc_trim(0)`: hands the free pages of every arena back to the kernel."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))


def _sample(n: int) -> Sample:
    rss_kib = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = 0
    return Sample(n, rss_kib / 1024, len(os.listdir("/proc/self/fd")), threading.active_count(), tasks)


# --- live cycles ----------------------------------------------------------------------------------


class Api:
    """The engine's HTTP API through one plain `ClientSession`: aiohttp's `TestClient` keeps every
    response it made until it closes, which a soak would measure as the engine's memory."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base.rstrip("/")

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kwargs) as resp:
            body = await resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body.decode(errors="replace")


async def _trickle_cycle(engine: Api, http: aiohttp.ClientSession, base: str, i: int, segment: bytes) -> None:
    from trickle import TricklePublisher

    mid = f"soak{i}"
    for suffix in ("-out", "-events"):
        async with http.post(f"{base}{mid}{suffix}") as resp:
            assert resp.status == 200, resp.status
    body = {"subscribe_url": f"{base}{mid}", "publish_url": f"{base}{mid}-out", "events_url": f"{base}{mid}-events",
            "model_id": "noop", "stream_id": mid}  # fmt: skip
    async with TricklePublisher(f"{base}{mid}", "video/mp2t", session=http) as pub:
        status_code, answer = await engine.call("POST", "/live-video-to-video", json=body)
        assert status_code == 200, answer
        async with pub.segment() as seg:
            await seg.write(segment)
        # The input closes (the publisher's DELETE) once the session has taken the segment.
        async with asyncio.timeout(30):
            while True:
                _, status = await engine.call("GET", f"/live/{mid}/status")
                if not isinstance(status, dict) or status.get("frames_in", 0) > 0 or status.get("state") in ("OFFLINE", "ERROR"):
                    break
                await asyncio.sleep(0.02)
    await _wait_gone(engine, mid)
    for suffix in ("-out", "-events"):
        async with http.delete(f"{base}{mid}{suffix}"):
            pass


async def _rtmp_cycle(engine: Api, rtmp_port: int, i: int, tags: list[bytes]) -> None:
    from livestream.rtmp.protocol import ClientConnection, split_rtmp_url

    url = f"rtmp://127.0.0.1:{rtmp_port}/live/rtmp{i}"
    host, port, app, name, tc_url = split_rtmp_url(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        proto = ClientConnection(app, name, tc_url)
        writer.write(proto.data_to_send())
        async with asyncio.timeout(10):
            while not proto.published:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the server")
                proto.feed(data)
                writer.write(proto.data_to_send())
        for n, tag in enumerate(tags):
            proto.send_media("video", n * 33, tag)
        proto.unpublish()
        writer.write(proto.data_to_send())
        await writer.drain()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    await _wait_gone(engine, f"rtmp{i}")


async def _delete_cycle(engine: Api, i: int) -> None:
    mid = f"del{i}"
    body = {"subscribe_url": "http://127.0.0.1:9/in", "publish_url": "http://127.0.0.1:9/out", "model_id": "noop", "stream_id": mid}
    status_code, answer = await engine.call("POST", "/live-video-to-video", json=body)
    assert status_code == 200, answer
    status_code, answer = await engine.call("DELETE", f"/live/{mid}")
    assert status_code in (200, 404), answer
    await _wait_gone(engine, mid)


async def _wait_gone(engine: Api, stream: str) -> None:
    async with asyncio.timeout(30):
        while True:
            _, listed = await engine.call("GET", "/live")
            if all(s["stream_id"] != stream or s.get("state") in ("OFFLINE", "ERROR") for s in listed["sessions"]):
                return
            await asyncio.sleep(0.02)


def _h264_tags() -> list[bytes]:
    """A few real FLV video tags (AVC sequence header + frames) from PyAV's H.264 encoder."""
    from fractions import Fraction

    import av

    from livestream.live.testsrc import draw_frame
    from livestream.rtmp.flv import CODED_FRAMES, SEQUENCE_START, annexb_nals, avc_config, avc_tag, avcc_from_nals

    enc = av.CodecContext.create("libx264", "w")
    enc.width = enc.height = 64
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "keyint=10"}
    nals: list[bytes] = []
    for n in range(5):
        frame = av.VideoFrame.from_ndarray(draw_frame(n, 64, 64), format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        for packet in enc.encode(frame):
            nals.append(bytes(packet))
    for packet in enc.encode(None):
        nals.append(bytes(packet))
    first = annexb_nals(nals[0])
    sps = next(n for n in first if n[0] & 0x1F == 7)
    pps = next(n for n in first if n[0] & 0x1F == 8)
    tags = [avc_tag(True, SEQUENCE_START, 0, avc_config(sps, pps))]
    for i, au in enumerate(nals):
        units = [n for n in annexb_nals(au) if n[0] & 0x1F not in (7, 8, 9)]
        tags.append(avc_tag(i == 0, CODED_FRAMES, 0, avcc_from_nals(units)))
    return tags


async def run_live(cycles: int, sample_every: int, *, census: bool = False) -> Series:
    from livestream.app import build_app
    from livestream.live.testsrc import make_ts_segments
    from livestream.protocols import RTMP_SERVER_KEY
    from livestream.settings import Settings
    from trickle import TrickleServerConfig, create_trickle_app

    series = Series("live cycles")
    segment = make_ts_segments(frames=15, width=64, height=64, audio=False)[0]
    tags = _h264_tags()
    orchestrator = TestServer(create_trickle_app(TrickleServerConfig(autocreate=True), base_path="/ai/trickle/"), host="127.0.0.1")
    await orchestrator.start_server()
    base = str(orchestrator.make_url("/ai/trickle/"))
    app = build_app(Settings(host="127.0.0.1", port=0, rtmp_port=0, live_pipeline="noop", rtmp_idle_timeout=5.0))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client, aiohttp.ClientSession() as http:
            engine = Api(http, str(client.make_url("")))
            rtmp_port = app[RTMP_SERVER_KEY].port
            assert rtmp_port is not None
            start = time.perf_counter()
            series.take(0)
            counted: Counter[str] | None = None
            for i in range(cycles):
                if census and i == cycles // 10:
                    counted = _census()
                kind = i % 3
                try:
                    if kind == 0:
                        await _trickle_cycle(engine, http, base, i, segment)
                    elif kind == 1:
                        await _rtmp_cycle(engine, rtmp_port, i, tags)
                    else:
                        await _delete_cycle(engine, i)
                except (AssertionError, ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
                    series.failures += 1
                    print(f"cycle {i} ({('trickle', 'rtmp', 'delete')[kind]}) failed: {exc!r}", file=sys.stderr)
                if (i + 1) % sample_every == 0:
                    series.take(i + 1)
            series.seconds = time.perf_counter() - start
            if counted is not None:
                after = _census()
                series.notes.append(
                    f"objects tracked by gc at cycle {cycles // 10}: {sum(counted.values())}, at cycle {cycles}: "
                    f"{sum(after.values())}; grown the most: {_grown(counted, after)}"
                )
                idle = _sample(cycles).rss_mib
                trimmed = _malloc_trim()
                series.notes.append(
                    f"RSS with the engine still up and idle: {idle:.1f} MiB; after malloc_trim(0) "
                    f"({'released pages' if trimmed else 'nothing released'}): {_sample(cycles).rss_mib:.1f} MiB"
                )
                was, now = _native(counted), _native(after)
                series.notes.append("objects holding native memory, then → at the end: " + ", ".join(f"{k} {was[k]} → {now[k]}" for k in was))
    finally:
        await orchestrator.close()
    if census:
        rss = _sample(cycles).rss_mib
        gc.collect()
        trimmed = _malloc_trim()
        series.notes.append(
            f"RSS after the run with the engine closed: {rss:.1f} MiB; after gc.collect() and malloc_trim(0) "
            f"({'released pages' if trimmed else 'nothing released'}): {_sample(cycles).rss_mib:.1f} MiB "
            f"(MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')})"
        )
    return series


# --- batch ------------------------------------------------------------------------------------------


#: Sides of the batch requests' images, in turn: mostly 8x8 (a 4x4 latent: the whole request path,
#: text encoder, UNet, VAE, PNG, for a fraction of the compute of 64x64), every tenth 64x64 so
#: that larger tensors are in the mix too.
BATCH_SIZES = (8, 8, 8, 8, 8, 8, 8, 8, 8, 64)


async def run_batch(
    requests: int, sample_every: int, models: Path, *, sizes: tuple[int, ...] = BATCH_SIZES, concurrency: int = 1
) -> Series:
    """`requests` text-to-image requests (one step, the sides in `sizes` in turn) from
    `concurrency` clients at once; a sample every `sample_every` answers."""
    from livestream.app import build_app
    from livestream.settings import Settings

    series = Series("batch requests")
    app = build_app(Settings(host="127.0.0.1", port=0, model_dir=models))
    bodies = [
        {"model_id": "tiny-text-to-image", "prompt": "a lighthouse", "width": side, "height": side, "num_inference_steps": 1, "seed": 1}
        for side in sizes
    ]
    async with TestClient(TestServer(app, host="127.0.0.1")) as client, aiohttp.ClientSession() as http:
        api = Api(http, str(client.make_url("")))
        status_code, answer = await api.call("POST", "/text-to-image", json=bodies[0])  # loads the model
        assert status_code == 200, answer
        start = time.perf_counter()
        series.take(0)
        sent = done = 0

        async def client_loop() -> None:
            nonlocal sent, done
            while sent < requests:
                body = bodies[sent % len(bodies)]
                sent += 1
                status_code, answer = await api.call("POST", "/text-to-image", json=body)
                if status_code != 200:
                    series.failures += 1
                    print(f"request {sent} failed: {status_code} {answer!r:.200}", file=sys.stderr)
                done += 1
                if done % sample_every == 0:
                    series.take(done)

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(client_loop())
        series.seconds = time.perf_counter() - start
    return series


def report(results: list[Series], load: tuple[float, float]) -> str:
    lines = [
        f"2-core x86_64 VM, no GPU, shared with other sessions (load average {load[0]:.1f} before, {load[1]:.1f} after).",
        "Slopes are least-squares fits per 1,000 cycles (requests) after the first tenth.",
        "",
        "| run | count | s | failures | RSS MiB first → last | RSS slope MiB/1k | fds first → last | fd slope /1k | threads first → last | thread slope /1k | tasks first → last | task slope /1k |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results:
        a, b = s.samples[0], s.samples[-1]
        sl = s.slopes()
        lines.append(
            f"| {s.name} | {b.n} | {s.seconds:.0f} | {s.failures} | {a.rss_mib:.0f} → {b.rss_mib:.0f} | {sl['rss_mib']:+.2f} | "
            f"{a.fds} → {b.fds} | {sl['fds']:+.2f} | {a.threads} → {b.threads} | {sl['threads']:+.2f} | "
            f"{a.tasks} → {b.tasks} | {sl['tasks']:+.2f} |"
        )
    lines.append("")
    for s in results:
        first, last = s.rss_thirds()
        lines.append(f"- {s.name}: RSS slope {first:+.2f} MiB/1k over the first third, {last:+.2f} MiB/1k over the last third.")
        lines.extend(f"- {s.name}: {note}." for note in s.notes)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import logging

    parser = argparse.ArgumentParser(prog="python -m benchmarks soak")
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2, help="batch clients at once (default 2)")
    parser.add_argument("--no-docs", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args(argv or [])
    logging.basicConfig(level=logging.ERROR)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("LIVESTREAM_URL_ALLOW_PRIVATE", "1")
    load0 = os.getloadavg()[0]
    results = []
    if args.cycles:
        results.append(asyncio.run(run_live(args.cycles, args.sample, census=True)))
        print(report(results, (load0, os.getloadavg()[0])), flush=True)
    if args.batch:
        import torch

        from pipelines.testing import write_tiny_model

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            write_tiny_model("text-to-image", Path(tmp) / "tiny-text-to-image")
            results.append(asyncio.run(run_batch(args.batch, args.sample, Path(tmp), concurrency=args.concurrency)))
    text = report(results, (load0, os.getloadavg()[0]))
    print(text)
    if args.no_docs:
        return
    doc = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(r"(## soak\n\n)(.*?)(?=\n## |\Z)", re.S)
    command = f"`.venv/bin/python -m benchmarks soak --cycles {args.cycles} --batch {args.batch}`\n\n"
    if pattern.search(doc):
        doc = pattern.sub(lambda m: m.group(1) + command + text, doc)
    else:
        doc = doc.rstrip() + "\n\n## soak\n\n" + command + text
    DOCS.write_text(doc)


if __name__ == "__main__":
    main(sys.argv[1:])
