"""RTMP ingest cost and latency: Debian's ffmpeg publishes 720p30 into the embedded server.

    python -m benchmarks rtmp_bench          (or: python benchmarks/rtmp_bench.py)

What is measured, with 1 and then 8 concurrent publishers:

- **Ingest CPU per stream**: this process's user + system CPU time (every thread: the event
  loop parsing chunks, one decode thread per stream) over a fixed window while the publishers
  send, divided by the number of streams, as % of one core. The publishers are
  `ffmpeg -re -c copy` of a pre-encoded clip (x264 veryfast zerolatency, 2 s keyframes,
  6 Mbit/s, AAC), so ffmpeg's own CPU is small and in other processes.
- **Push → decoded frame latency**: from the moment the event loop read the bytes that completed
  a video message to the moment its frame left the decoder (p50/p99 over every frame); on
  loopback with `-re` ffmpeg writes each packet when its time comes, so this is the engine's
  part of publish-to-frame latency.
- **Event-loop lag**: the worst delay of a 10 ms timer on the loop during the window.

The frames go to a null session target (no pipeline, no encode): this is the ingest alone, the
same code path `RtmpServer` → `RtmpIngest` → `FrameTarget` that sessions use.
Results are appended to docs/benchmarks.md (`## rtmp_bench`).
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livestream.ingest import Ingest
from livestream.rtmp import RtmpServer
from livestream.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
CLIP_SECONDS = 24
WINDOW = 15.0


@dataclass
class _Target:
    latencies: list[float] = field(default_factory=list)
    frames: int = 0
    audio: int = 0

    def put_video(self, frame: Any, arrival: float | None = None) -> None:
        self.frames += 1
        if arrival is not None:
            self.latencies.append(time.monotonic() - arrival)

    def put_audio(self, item: Any) -> None:
        self.audio += 1

    def set_audio_source(self, source: Any) -> None:
        pass

    def report_error(self, message: str) -> None:
        print("error:", message, file=sys.stderr)

    def on_input(self) -> None:
        pass

    def trace(self, name: str) -> None:
        pass


class _NullManager:
    """Stands in for `SessionManager`: each publish runs its ingest into a null target."""

    def __init__(self) -> None:
        self.targets: dict[str, _Target] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def start_direct(self, stream: str, ingest: Ingest) -> None:
        target = self.targets[stream] = _Target()
        self.tasks.append(asyncio.create_task(ingest.run(target)))  # type: ignore[arg-type]


def _make_clip(path: Path) -> None:
    cmd = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={CLIP_SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={CLIP_SECONDS}",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", "-keyint_min", "60",
        "-b:v", "6M", "-maxrate", "6M", "-bufsize", "6M", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "160k", "-ac", "2", "-f", "flv", str(path),
    ]  # fmt: skip
    import subprocess

    subprocess.run(cmd, check=True)


async def _loop_lag(stop: asyncio.Event) -> float:
    worst = 0.0
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - t - 0.01)
    return worst


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _run(clip: Path, publishers: int) -> dict[str, Any]:
    manager = _NullManager()
    settings = Settings(host="127.0.0.1", rtmp_port=0, rtmp_idle_timeout=30)
    async with RtmpServer(manager, settings) as server:  # type: ignore[arg-type]
        procs = [
            await asyncio.create_subprocess_exec(
                FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(clip),
                "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{server.port}/live/s{i}",
            )  # fmt: skip
            for i in range(publishers)
        ]
        await asyncio.sleep(3.0)  # connect, first keyframes, decoders warm
        for target in manager.targets.values():
            target.latencies.clear()
        frames0 = sum(t.frames for t in manager.targets.values())
        stop = asyncio.Event()
        lag_task = asyncio.create_task(_loop_lag(stop))
        cpu0, wall0 = _cpu(), time.monotonic()
        await asyncio.sleep(WINDOW)
        cpu1, wall1 = _cpu(), time.monotonic()
        stop.set()
        lag = await lag_task
        frames1 = sum(t.frames for t in manager.targets.values())
        latencies = [x for t in manager.targets.values() for x in t.latencies]
        for proc in procs:
            await proc.wait()
        await asyncio.gather(*manager.tasks, return_exceptions=True)
    cpu_pct = (cpu1 - cpu0) / (wall1 - wall0) * 100
    return {
        "publishers": publishers,
        "streams": len(manager.targets),
        "cpu_per_stream": cpu_pct / publishers,
        "cpu_total": cpu_pct,
        "fps_per_stream": (frames1 - frames0) / (wall1 - wall0) / publishers,
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "loop_lag_ms": lag * 1000,
        "frames": sum(t.frames for t in manager.targets.values()),
    }


def _report(results: list[dict[str, Any]], load: tuple[float, float]) -> str:
    lines = [
        "Embedded RTMP ingest (`livestream/rtmp/`): Debian ffmpeg "
        f"(`-re -c copy`) publishes a 720p30 clip (x264 veryfast zerolatency, 2 s keyframes, 6 Mbit/s, AAC 160k) "
        f"into the server; frames go to a null target (ingest only: chunk parsing on the loop, "
        f"one `av.CodecContext` decode thread per stream). CPU is this process's user + system time over a "
        f"{WINDOW:g} s window; latency is bytes read by the loop → frame out of the decoder, every frame. "
        f"{platform.machine()} VM, {os.cpu_count()} cores, no GPU, Python {platform.python_version()}, "
        f"load average {load[0]:.1f} before / {load[1]:.1f} after (the machine is shared).",
        "",
        "| publishers | CPU per stream (% of one core) | CPU total | fps per stream | latency p50 | latency p99 | worst loop lag |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['publishers']} | {r['cpu_per_stream']:.1f} | {r['cpu_total']:.1f} | {r['fps_per_stream']:.1f} "
            f"| {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['loop_lag_ms']:.1f} ms |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rtmp-bench-") as tmp:
        clip = Path(tmp) / "clip720p30.flv"
        _make_clip(clip)
        load0 = os.getloadavg()[0]
        results = [asyncio.run(_run(clip, n)) for n in (1, 8)]
        load1 = os.getloadavg()[0]
    text = _report(results, (load0, load1))
    print(text)
    doc = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(r"(## rtmp_bench\n\n)(.*?)(?=\n## |\Z)", re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda m: m.group(1) + text, doc)
    else:
        doc = doc.rstrip() + "\n\n## rtmp_bench\n\n" + text
    DOCS.write_text(doc)


if __name__ == "__main__":
    main()
