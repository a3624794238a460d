"""Glass-to-glass latency over WebRTC: WHIP in, the engine's `noop` session, WHEP out.

    python -m benchmarks glass_to_glass [--size 512] [--seconds 15] [--viewers 4]

The engine runs in a child process (`build_app` under `web.run_app`, as `livestream serve`
runs it) so its CPU time is its own. This process is both ends:

- the publisher, an aiortc WHIP client whose track draws into each 512x512 frame its number
  (two rows of blocks, `live.testsrc.draw_frame`) and its send time (the low 32 bits of the
  wall clock in ms, four more rows), at 30 fps;
- the viewers, aiortc WHEP clients; the first one decodes the drawn numbers and times.

Latency is from the moment a frame is generated to the moment a viewer holds it decoded
(`track.recv()` returns), read from the pixels: the publisher's encode (aiortc, VP8), the
engine's decode, queue, pipeline, its one shared x264 encode and RTP packetization, and the
viewer's jitter buffer and decode. A browser adds its compositor (up to one 60 Hz refresh).

CPU: the engine process's CPU time (user + system, psutil) over a window with 0, 1 and N
viewers; the cost of each viewer past the first is (cpu(N) - cpu(1)) / (N - 1).

`--browser` also publishes an audio track (aiortc's silence, Opus) and measures in headless
Chromium, one page at a time, to each shown frame's expected display time: the player page, the
OBS view page with audio in low-latency mode (its default), the same with `?lowlatency=0`, and
the view page muted (no audio received).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import platform
import socket
import statistics
import sys
import time
from typing import Any

import numpy as np

_ENGINE = """
import sys
from aiohttp import web
from livestream.app import build_app
from livestream.settings import Settings
port = int(sys.argv[1])
app = build_app(Settings(host="127.0.0.1", port=port, live_pipeline="noop", webrtc_hosts=("127.0.0.1",)))
web.run_app(app, host="127.0.0.1", port=port, print=None)
"""

_TIME_BITS = 32
_TIME_ROW = 2  # rows 0-1 hold the frame number


def stamp(number: int, sent_ms: int, width: int, height: int) -> np.ndarray:
    """`draw_frame(number)` plus `sent_ms` (mod 2**32) in rows 2-5 of blocks."""
    from livestream.live.testsrc import draw_frame

    img = draw_frame(number, width, height)
    b = width // 8
    value = sent_ms % (1 << _TIME_BITS)
    for bit in range(_TIME_BITS):
        on = (value >> (_TIME_BITS - 1 - bit)) & 1
        row, col = divmod(bit, 8)
        y = (_TIME_ROW + row) * b
        img[y : y + b, col * b : (col + 1) * b] = 255 if on else 0
    return img


def read_stamp(rgb: np.ndarray) -> tuple[int, int]:
    """(frame number, send time ms mod 2**32) drawn by `stamp`."""
    from livestream.live.testsrc import read_number

    width = rgb.shape[1]
    b = width // 8
    q = max(1, b // 4)
    gray = rgb.astype(np.float32).mean(axis=2)
    value = 0
    for bit in range(_TIME_BITS):
        row, col = divmod(bit, 8)
        y = (_TIME_ROW + row) * b
        cell = gray[y + q : y + b - q, col * b + q : (col + 1) * b - q]
        value = (value << 1) | int(cell.mean() > 128)
    return read_number(rgb), value


def _now_ms() -> int:
    return int(time.time() * 1000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(
    size: int, seconds: float, viewers: int, marker_release: bool = True, browser: bool = False
) -> dict[str, Any]:
    import aiohttp
    import av
    import psutil
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import AudioStreamTrack

    from livestream.webrtc.client import WhepClient, WhipClient
    from livestream.webrtc.aiortc_patches import install_host_addresses, install_marker_jitter_buffer

    install_host_addresses(["127.0.0.1"])
    if marker_release:
        install_marker_jitter_buffer()  # the viewer releases frames on the RTP marker, as a browser does

    class StampedTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.start: float | None = None

        async def recv(self) -> av.VideoFrame:  # type: ignore[override]
            if self.start is None:
                self.start = time.monotonic()
            delay = self.start + self.count / 30 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            img = stamp(self.count, _now_ms(), size, size)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = self.count * 3000, fractions.Fraction(1, 90000)
            self.count += 1
            return frame

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _ENGINE, str(port), stdout=asyncio.subprocess.DEVNULL)
    engine = psutil.Process(proc.pid)
    result: dict[str, Any] = {"size": size, "fps": 30, "seconds": seconds}
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(60):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{base}/health") as resp:
                            if resp.status == 200:
                                break
                    await asyncio.sleep(0.2)
            track = StampedTrack()
            # Audio matters only to a browser (its A/V sync); the aiortc viewers read video.
            audio = AudioStreamTrack() if browser else None
            publisher = await WhipClient.connect(http, f"{base}/live/g2g/whip", track, audio=audio)
            result["audio"] = audio is not None
            async with asyncio.timeout(30):
                while True:
                    async with http.get(f"{base}/live/g2g/status") as resp:
                        if resp.status == 200 and (await resp.json())["frames_out"] > 0:
                            break
                    await asyncio.sleep(0.2)

            async def cpu_window(window: float) -> float:
                before = engine.cpu_times()
                t0 = time.monotonic()
                await asyncio.sleep(window)
                after = engine.cpu_times()
                return 100.0 * ((after.user + after.system) - (before.user + before.system)) / (time.monotonic() - t0)

            await asyncio.sleep(2)
            result["cpu_0_viewers"] = await cpu_window(min(seconds, 8))

            latencies: list[float] = []
            order_errors = 0
            received = 0

            async def measure(client: WhepClient) -> None:
                nonlocal order_errors, received
                last = -1
                while True:
                    frame = await client.video.recv()
                    now = _now_ms()
                    number, sent = read_stamp(frame.to_ndarray(format="rgb24"))
                    received += 1
                    if number <= last:
                        order_errors += 1
                    last = number
                    latencies.append(float((now - sent) % (1 << _TIME_BITS)))

            async def drain(client: WhepClient) -> None:
                while True:
                    await client.video.recv()

            first = await WhepClient.connect(http, f"{base}/live/g2g/whep")
            tasks = [asyncio.create_task(measure(first))]
            await asyncio.sleep(3)
            latencies.clear()
            result["cpu_1_viewer"] = await cpu_window(seconds)
            one = list(latencies)
            others = [await WhepClient.connect(http, f"{base}/live/g2g/whep") for _ in range(viewers - 1)]
            tasks += [asyncio.create_task(drain(c)) for c in others]
            await asyncio.sleep(3)
            latencies.clear()
            result[f"cpu_{viewers}_viewers"] = await cpu_window(seconds)
            many = list(latencies)
            async with http.get(f"{base}/live/g2g/status") as resp:
                status = await resp.json()
            result["engine_input_fps"] = status["input_status"]["fps"]
            result["engine_output_fps"] = status["inference_status"]["fps"]
            result["engine_dropped_frames"] = status["dropped_frames"]
            result["published_frames"] = track.count
            result["engine_frames_in"] = status["frames_in"]
            result["engine_e2e_latency_ms"] = status["e2e_latency_ms"]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in [first, *others]:
                await client.close()
            if browser:
                result["browser"] = await _browser_latency(base, seconds)
            await publisher.close()
            result["viewers"] = viewers
            result["cpu_per_extra_viewer"] = (result[f"cpu_{viewers}_viewers"] - result["cpu_1_viewer"]) / max(1, viewers - 1)
            for name, values in (("1_viewer", one), (f"{viewers}_viewers", many)):
                result[f"latency_{name}_ms"] = {
                    "n": len(values),
                    "p50": _percentile(values, 0.5) if values else None,
                    "p99": _percentile(values, 0.99) if values else None,
                    "mean": statistics.fmean(values) if values else None,
                }
            result["order_errors"] = order_errors
            result["frames_read"] = received
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return result


# Runs in the player page: read the stamp of every frame shown and compare its send time with
# the frame's expected display time (the compositor's), as the WebRTC findings did.
_PAGE_PROBE = """
(() => {
  window.g2g = [];
  const video = document.getElementById("video");
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const bit = (data, w, b, row, col) => {
    const x = Math.floor(col * b + b / 2), y = Math.floor(row * b + b / 2);
    const i = (y * w + x) * 4;
    return (data[i] + data[i + 1] + data[i + 2]) / 3 > 128 ? 1 : 0;
  };
  const onFrame = (now, meta) => {
    const w = video.videoWidth, h = video.videoHeight;
    if (w) {
      canvas.width = w; canvas.height = h;
      ctx.drawImage(video, 0, 0);
      const data = ctx.getImageData(0, 0, w, h).data;
      const b = w / 8;
      let sent = 0;
      for (let k = 0; k < 32; k++) sent = sent * 2 + bit(data, w, b, 2 + Math.floor(k / 8), k % 8);
      const shown = (performance.timeOrigin + meta.expectedDisplayTime) % 4294967296;
      window.g2g.push((shown - sent + 4294967296) % 4294967296);
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  return true;
})()
"""


#: The pages `--browser` measures, one at a time: name -> path under /live/g2g.
BROWSER_PAGES = {
    "player page (audio and video together)": "",
    "view page, low latency (default), ?audio=1": "/view?audio=1",
    "view page, ?audio=1&lowlatency=0": "/view?audio=1&lowlatency=0",
    "view page, muted (no audio received)": "/view",
}


async def _browser_latency(base: str, seconds: float, rounds: int = 2) -> dict[str, Any]:
    """Headless Chromium on each of `BROWSER_PAGES`: generated -> expected display time. The
    pages take turns (`rounds` times each, `seconds` a turn), so a change in the machine's load
    falls on all of them."""
    from tests.webrtc.chromium import Browser

    values: dict[str, list[float]] = {name: [] for name in BROWSER_PAGES}
    jitter: dict[str, list[float]] = {name: [] for name in BROWSER_PAGES}
    async with Browser() as browser:
        for _ in range(rounds):
            for name, path in BROWSER_PAGES.items():
                page = await browser.open(f"{base}/live/g2g{path}")
                state = "(window.playerState || window.viewState)"
                await page.wait_for(f"{state} && {state}.frames > 30", timeout=30)
                await asyncio.sleep(2)  # past the first frames' catch-up
                await page.eval(_PAGE_PROBE)
                before = await page.eval(_JITTER)
                await asyncio.sleep(seconds)
                values[name] += [float(v) for v in await page.eval("window.g2g") if v < 10_000]
                after = await page.eval(_JITTER)
                if before and after and after[1] > before[1]:
                    jitter[name].append(1000 * (after[0] - before[0]) / (after[1] - before[1]))
                await page.close()
    return {
        name: {
            "n": len(v),
            "p50": _percentile(v, 0.5) if v else None,
            "p99": _percentile(v, 0.99) if v else None,
            "video_jitter_buffer_ms": statistics.fmean(jitter[name]) if jitter[name] else None,
        }
        for name, v in values.items()
    }


# The video receiver's cumulative jitterBufferDelay (s) and jitterBufferEmittedCount.
_JITTER = """(async () => {
  const w = window.viewWatcher || window.playerWatcher;
  const stats = await w.session.pc.getStats();
  let out = null;
  stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') out = [s.jitterBufferDelay, s.jitterBufferEmittedCount]; });
  return out;
})()"""


def browser_markdown(pages: dict[str, Any]) -> str:
    lines = ["| page | shown p50 | shown p99 | video jitter buffer (mean) | frames |", "|---|---|---|---|---|"]
    for name, r in pages.items():
        p50 = f"{r['p50']:.0f} ms" if r["p50"] is not None else "–"
        p99 = f"{r['p99']:.0f} ms" if r["p99"] is not None else "–"
        jb = f"{r['video_jitter_buffer_ms']:.0f} ms" if r.get("video_jitter_buffer_ms") is not None else "–"
        lines.append(f"| {name} | {p50} | {p99} | {jb} | {r['n']} |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    n = result["viewers"]
    one, many = result["latency_1_viewer_ms"], result[f"latency_{n}_viewers_ms"]
    return "\n".join(
        [
            f"| viewers | latency p50 | latency p99 | engine CPU (% of one core) |",
            "|---|---|---|---|",
            f"| 0 | – | – | {result['cpu_0_viewers']:.1f} |",
            f"| 1 | {one['p50']:.0f} ms | {one['p99']:.0f} ms | {result['cpu_1_viewer']:.1f} |",
            f"| {n} | {many['p50']:.0f} ms | {many['p99']:.0f} ms | {result[f'cpu_{n}_viewers']:.1f} |",
            "",
            f"CPU per viewer past the first: {result['cpu_per_extra_viewer']:.1f}% of one core. "
            f"{result['size']}x{result['size']} at 30 fps, {result['seconds']:g} s windows, frames out of order: "
            f"{result['order_errors']}.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="glass_to_glass", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument(
        "--stock-viewer",
        action="store_true",
        help="the viewer keeps aiortc's jitter buffer (a frame leaves with the next frame's first packet)",
    )
    parser.add_argument(
        "--browser",
        action="store_true",
        help="publish audio too and measure to the display time in headless Chromium: player page, OBS view page with and without low latency, muted",
    )
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv if argv is not None else [])
    if args.browser:
        from tests.webrtc.chromium import chromium_path

        if chromium_path() is None:
            print("glass_to_glass: error: --browser needs Chromium, which is not installed: apt install chromium "
                  "(or make system-packages), or run without --browser.", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
    result = asyncio.run(
        _run(args.size, args.seconds, args.viewers, marker_release=not args.stock_viewer, browser=args.browser)
    )
    result["viewer_jitter_buffer"] = "aiortc" if args.stock_viewer else "marker release"
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    result["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, indent=2))
    print(markdown(result))
    if "browser" in result:
        print()
        print(browser_markdown(result["browser"]))


if __name__ == "__main__":
    main(sys.argv[1:])
