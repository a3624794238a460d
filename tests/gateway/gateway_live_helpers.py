"""What the live gateway tests share: noop runner processes, a gateway served on loopback (HTTP
or HTTPS), a trickle publisher of MPEG-TS segments at about real time, a trickle viewer, and a
real ffmpeg RTMP listener standing for a stream's RTMP output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway_fleet import stop_accepting, stop_runner
from livestream.gateway import GatewayConfig, RunnerConfig, build_gateway_app
from trickle import TricklePublisher, TrickleSubscriber

__all__ = ["FFMPEG", "RunnerProc", "Viewer", "free_port", "gateway_config", "publish_segments", "rtmp_listener",
           "runner_procs", "serve", "serving", "start_runner", "start_stream", "stop_accepting", "stop_runner",
           "stop_runners", "until", "wait_idle"]  # fmt: skip

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition",
                detail: Callable[[], str] | None = None) -> None:  # fmt: skip
    """Wait for `cond`, `timeout` s at most; the failure names `what` (and `detail()`: figures)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met in {timeout:g} s" + (f": {detail()}" if detail is not None else ""))
        await asyncio.sleep(0.05)


# --- runner processes -----------------------------------------------------------------------


@dataclass
class RunnerProc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def start_runner(tmp: Path, name: str) -> RunnerProc:
    """`livestream serve` with the noop live pipeline, on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE", "MODEL_ID", "AUTH_TOKEN")}
    env.update(PIPELINE="live-video-to-video", MODEL_ID="noop", HOST="127.0.0.1", PORT=str(port),
               HF_HUB_OFFLINE="1", MODEL_DIR=str(tmp), PYTHONUNBUFFERED="1")  # fmt: skip
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "livestream", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    return RunnerProc(proc, f"http://127.0.0.1:{port}", log)


async def wait_idle(http: aiohttp.ClientSession, runner: RunnerProc, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert runner.proc.poll() is None, runner.log.read_text()[-3000:]
        try:
            async with http.get(runner.url + "/health") as resp:
                if resp.status == 200 and (await resp.json())["status"] == "IDLE":
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(runner.log.read_text()[-3000:])


def stop_runners(runners: Sequence[RunnerProc]) -> None:
    """SIGINT to every runner still running, then wait (10 s each) and kill what is left."""
    for r in runners:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGINT)
    for r in runners:
        try:
            r.proc.wait(10)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait(5)


@contextlib.asynccontextmanager
async def runner_procs(tmp: Path, count: int) -> AsyncIterator[list[RunnerProc]]:
    """`count` noop runners, idle and ready; stopped at exit."""
    runners = [start_runner(tmp, f"r{i}") for i in range(count)]
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(wait_idle(http, r) for r in runners))
        yield runners
    finally:
        stop_runners(runners)


# --- the gateway ----------------------------------------------------------------------------


async def serve(app: web.Application, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> tuple[str, web.AppRunner]:
    """`app` on loopback (`port` 0: any): its base URL and its runner (the caller stops it with
    `stop_runner`)."""
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = site._server
    assert isinstance(server, asyncio.Server)
    scheme = "https" if ssl_context is not None else "http"
    return f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}", runner


def gateway_config(runners: Sequence[RunnerProc], port: int, **fields: Any) -> GatewayConfig:
    """A gateway over `runners` on `port`, its channels reached at that port, discovery by hand."""
    fields.setdefault("live_trickle_url", f"http://127.0.0.1:{port}/ai/trickle/")
    return GatewayConfig(runners=tuple(RunnerConfig(r.url) for r in runners), refresh_interval=60.0, random_share=0.0,
                         live_health_interval=0.5, port=port, **fields)  # fmt: skip


@contextlib.asynccontextmanager
async def serving(config: GatewayConfig, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, web.Application]]:
    """The gateway app for `config`, served on `config.port`: (its base URL, the app)."""
    app = build_gateway_app(config)
    gw, gw_runner = await serve(app, config.port, ssl_context)
    try:
        yield gw, app
    finally:
        await stop_runner(gw_runner)


# --- media in and out -----------------------------------------------------------------------


def obs_publish(url: str, seconds: int, *extra: str) -> list[str]:
    """ffmpeg publishing like OBS: x264 zerolatency, 1 s keyframes, AAC, FLV to `url` (RTMP or
    RTMPS); `extra` output options go before the URL."""
    return [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", f"testsrc=size=128x128:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
        "-threads", "1", "-c:a", "aac", *extra, "-f", "flv", url,
    ]  # fmt: skip


async def first_output(app: web.Application, name: str, how: str) -> Any:
    """The gateway's stream `name`, once a publish (`how`) has started it and it has output."""
    from livestream.gateway.live_routes import LIVE_KEY

    live = app[LIVE_KEY]
    await until(lambda: live.get(name) is not None, what=f"stream started by the {how} publish")
    stream = live.get(name)
    assert stream is not None
    await until(lambda: stream.segments_out >= 1, what="first output segment")
    return stream


async def start_stream(http: aiohttp.ClientSession, gw: str, stream: str, query: str = "") -> dict[str, Any]:
    """go-livepeer's ingest hook: the stream starts on a runner; the answer (channel URLs)."""
    form = aiohttp.FormData({"source_id": "s1", "source_type": "rtmpconn", "query": query})
    async with http.post(f"{gw}/live/video-to-video/{stream}/start", data=form) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def publish_segments(http: aiohttp.ClientSession, url: str, segments: Sequence[bytes], *, chunk: int = 0) -> None:
    """Publish 1 s MPEG-TS segments at about real time (one a second); `chunk` > 0 writes each in
    pieces of that size, 20 ms apart, as a live encoder would. Cancel it to end the input (the
    publisher's close DELETEs the channel)."""
    async with TricklePublisher(url, "video/mp2t", session=http) as pub:
        for seg in segments:
            t0 = time.monotonic()
            async with pub.segment() as w:
                if chunk <= 0:
                    await w.write(seg)
                else:
                    for k in range(0, len(seg), chunk):
                        await w.write(seg[k : k + chunk])
                        await asyncio.sleep(0.02)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))


@dataclass
class Viewer:
    """A trickle subscriber keeping every output segment with its arrival time."""

    segments: list[tuple[float, bytes]] = field(default_factory=list)

    async def run(self, http: aiohttp.ClientSession, url: str) -> None:
        async with TrickleSubscriber(url, start_seq=0, session=http) as sub:
            async for segment in sub:
                data = await segment.read()
                if data:
                    self.segments.append((time.monotonic(), data))


@contextlib.asynccontextmanager
async def rtmp_listener(out_file: Path) -> AsyncIterator[str]:
    """A real ffmpeg listening for one RTMP publisher and copying it to `out_file`: the RTMP URL.
    At exit it is waited for (20 s: the publisher should be gone by then), else killed."""
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/out"
    listener = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-listen", "1", "-timeout", "60",
         "-i", url, "-c", "copy", "-f", "flv", str(out_file)],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield url
        await asyncio.to_thread(listener.wait, 20)
    finally:
        if listener.poll() is None:
            listener.kill()
        listener.wait(5)
        if listener.stderr is not None:
            listener.stderr.close()
