"""The live path measured from outside the engine (issue 19).

    python -m benchmarks live_bench                          # 3 rounds, 10 s streams
    python -m benchmarks live_bench --rounds 1 --seconds 5   # quick look

Every piece runs as a user or a go-livepeer orchestrator would run it, and only the bytes on the
wire are measured:

- the engine: `livestream serve --pipeline live-video-to-video --model-id M --port P`, a fresh
  process for every run (its whole process tree's CPU time read with psutil);
- the orchestrator's trickle server: `livestream trickle-server`, another process;
- this process: the gateway. It creates the four channels, `POST /live-video-to-video`s the
  engine, publishes ffmpeg-made MPEG-TS (1 s segments, 512x512 30 fps H.264 + AAC, the
  ffmpeg binary's default muxing) paced as a live encoder hands it out (each video frame's bytes
  at its dts), and reads the output channel, noting when each output frame's last byte arrives
  (`live_observer.TsTimeline`). After the engine has exited, PyAV decodes what came back.

Per run (a fresh engine): a first stream as soon as /health says IDLE, for the start-up figures,
fed until its first output frame is in (plus 1 s; at most `--startup-seconds`); then the
measured stream (`--seconds`). Runs: `noop`, `noop-rgb` (the pixel path: an RGB round trip per
frame), `noop` with a video-only input, and `streamdiffusion` on the CPU with a tiny
random-weight model (start-up figures only: two start-up streams). The bare PyAV baseline runs
in this process between them. Rounds
alternate the configurations; the table gives medians over rounds. Results (JSON, markdown,
each stream's output MPEG-TS, engine logs) go to `--out` (default: a new temp folder).
`--engine-commit REV` runs the engine from a `git archive` of that commit instead of the
installed working tree (before/after comparisons; a tree with uncommitted edits).

What each figure is: see `_NOTES` (printed with the table) and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import av
import psutil  # type: ignore[import-untyped]

from trickle import TrickleError, TricklePublisher, TrickleSubscriber

from .live_observer import Input, PacedSegment, Raw, analyse

__all__ = ["main"]

WIDTH = HEIGHT = 512
FPS = 30
TRICKLE_PATH = "/ai/trickle/"
#: The engine's encoder defaults (livestream/live/media.py EncoderConfig), for the bare loop.
X264 = {
    "preset": "superfast",
    "tune": "zerolatency",
    "profile": "baseline",
    "bf": "0",
    "crf": "23",
    "g": str(FPS),
    "sc_threshold": "0",
    "threads": "1",
}
READY_TIMEOUT = {"noop": 60.0, "noop-rgb": 60.0, "streamdiffusion": 600.0}
#: After the input ends, how long the output may take to close (a slow pipeline drains its queue).
OUTPUT_CLOSE_TIMEOUT = {"streamdiffusion": 180.0}
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)


class BenchError(RuntimeError):
    """A run could not be measured (engine did not start, refused the stream, ...)."""


@dataclass(frozen=True)
class RunConfig:
    name: str
    model_id: str
    audio: bool
    #: Bare-loop variant the CPU figure is compared with (None: start-up figures only).
    baseline: str | None
    #: The input has B-frames (ffmpeg's default). Without them (`-bf 0`, a live encoder's
    #: low-latency setting) the input imposes no reorder delay: what is left is the engine's.
    bframes: bool = True

    @property
    def input_key(self) -> tuple[bool, bool]:
        return self.audio, self.bframes


CONFIGS = {
    c.name: c
    for c in (
        RunConfig("noop", "noop", True, "bare"),
        RunConfig("noop-rgb", "noop-rgb", True, "bare-rgb"),
        RunConfig("noop-video", "noop", False, "bare"),
        RunConfig("noop-no-bframes", "noop", True, "bare-no-bframes", bframes=False),
        RunConfig("streamdiffusion", "streamdiffusion", True, None),
    )
}


# --- processes ------------------------------------------------------------------------------

_CHILDREN: list[Child] = []


class Child:
    """One of our subprocesses, in its own process group so `stop()` also ends what it started."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned = 0.0
        self.exit_seconds: float | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.spawned = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=_ENGINE_SRC,  # `python -m` puts the cwd first on sys.path
                start_new_session=True,
            )
        _CHILDREN.append(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the graceful shutdown a container gets), then SIGKILL to the group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
                self.exit_seconds = time.monotonic() - started
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
        if self in _CHILDREN:
            _CHILDREN.remove(self)

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and all its descendants (live and reaped)."""
        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                total += t.user + t.system
                if p is root:
                    total += t.children_user + t.children_system
        return total

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _stop_all() -> None:
    for child in list(_CHILDREN):
        child.stop(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: `--engine-commit`: the engine's source tree (a `git archive` export); None: the installed one.
_ENGINE_SRC: Path | None = None


def _livestream() -> list[str]:
    exe = Path(sys.executable).parent / "livestream"
    if _ENGINE_SRC is None and exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "livestream"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE", "MODEL_ID", "MODEL_DIR", "AUTH_TOKEN", "PORT", "HOST")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    if _ENGINE_SRC is not None:  # ahead of the editable install of the working tree
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(_ENGINE_SRC), env.get("PYTHONPATH", "")) if x)
    return env


def export_commit(rev: str, into: Path) -> tuple[str, Path]:
    """`git archive REV` of the repository this file is in, unpacked under `into`."""
    repo = Path(__file__).resolve().parent.parent
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    out = into / f"engine-{sha[:12]}"
    if not (out / "livestream").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "-C", str(repo), "archive", sha], stdout=subprocess.PIPE)
        try:
            subprocess.run(["tar", "-x", "-C", str(out)], stdin=archive.stdout, check=True, timeout=120)
        finally:
            assert archive.stdout is not None
            archive.stdout.close()
            archive.wait(30)
    return sha, out


async def _poll(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(interval)


class Engine(Child):
    """`livestream serve --pipeline live-video-to-video --model-id M`, as a user starts it."""

    def __init__(self, model_id: str, log: Path, model_dir: Path | None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [*_livestream(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--pipeline", "live-video-to-video", "--model-id", model_id]
        if model_dir is not None:
            argv += ["--model-dir", str(model_dir)]
        super().__init__(f"engine {model_id}", argv, log, _env())
        self.states: list[str] = []

    async def health(self, http: aiohttp.ClientSession) -> str | None:
        try:
            async with http.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    return None
                return str((await resp.json()).get("status"))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def wait_health(self, http: aiohttp.ClientSession, wanted: set[str], timeout: float) -> float:
        """Poll /health (every 50 ms) until it says one of `wanted`; seconds since spawn."""

        async def check() -> float | None:
            if not self.running:
                raise BenchError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.tail()}")
            state = await self.health(http)
            if state is not None and (not self.states or self.states[-1] != state):
                self.states.append(state)
            if state == "ERROR":
                raise BenchError(f"{self.name}: /health says ERROR:\n{self.tail()}")
            return time.monotonic() - self.spawned if state in wanted else None

        try:
            return float(await _poll(f"{self.name} /health in {wanted}", check, timeout))
        except BenchError as exc:
            raise BenchError(f"{exc}\n{self.tail()}") from None


class TrickleServerProcess(Child):
    """`livestream trickle-server`: the orchestrator's trickle server, in its own process."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}{TRICKLE_PATH}"
        argv = [*_livestream(), "trickle-server", "--host", "127.0.0.1", "--port", str(self.port), "--base-path", TRICKLE_PATH]
        super().__init__("trickle-server", argv, log, _env())

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        async def check() -> bool | None:
            if not self.running:
                raise BenchError(f"trickle server exited:\n{self.tail()}")
            try:
                async with http.get(self.base + "probe/next", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    return True if resp.status == 404 else None
            except (aiohttp.ClientError, TimeoutError):
                return None

        await _poll("trickle server", check, 30.0)


# --- one stream -----------------------------------------------------------------------------


async def _create_channels(http: aiohttp.ClientSession, channels: dict[str, tuple[str, str]]) -> None:
    for url, mime in channels.values():  # as server/ai_http.go: all four before the start call
        async with http.post(url, headers={"Expect-Content": mime}, timeout=HTTP_TIMEOUT) as resp:
            if resp.status != 200:
                raise BenchError(f"creating {url}: HTTP {resp.status} {await resp.text()}")


async def _delete(http: aiohttp.ClientSession, url: str) -> None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.delete(url, timeout=aiohttp.ClientTimeout(total=5)):
            pass


async def _observe(http: aiohttp.ClientSession, url: str, raw: Raw) -> None:
    """The output channel: every chunk goes through the TS timeline the moment it arrives."""
    async with TrickleSubscriber(url, start_seq=0, session=http) as sub:
        async for segment in sub:
            parts: list[bytes] = []
            async for chunk in segment:
                raw.timeline.feed(chunk, time.monotonic())
                parts.append(chunk)
            raw.leftover_bytes += raw.timeline.end_segment()
            raw.output.append(b"".join(parts))
    raw.output_closed = time.monotonic()


async def _read_events(http: aiohttp.ClientSession, url: str, raw: Raw) -> None:
    async with TrickleSubscriber(url, start_seq=0, session=http) as sub:
        async for segment in sub:
            data = await segment.read()
            with contextlib.suppress(ValueError):
                if data:
                    raw.events.append(json.loads(data))


async def _publish(
    pub: TricklePublisher, paced: list[PacedSegment], t0: float, sent: dict[int, float], stop: asyncio.Event
) -> None:
    """Each frame's bytes at t0 + its dts; a segment closes when the next one starts. Once
    `stop` is set, the segment being written ends at the next frame and the input is over."""
    for seg in paced:
        if stop.is_set():
            return
        async with pub.segment() as writer:
            for chunk in seg.chunks:
                if stop.is_set():
                    break
                delay = t0 + chunk.at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                await writer.write(chunk.data)
                for pts in chunk.frames:
                    sent[pts] = now
            delay = t0 + seg.end - time.monotonic()
            if delay > 0 and not stop.is_set():
                await asyncio.sleep(delay)


async def _stop_after_first_frame(raw: Raw, stop: asyncio.Event, extra: float = 1.0) -> None:
    while not raw.timeline.video():
        await asyncio.sleep(0.02)
    await asyncio.sleep(extra)
    stop.set()


async def run_stream(
    http: aiohttp.ClientSession, engine: Engine, base: str, mid: str, model_id: str, stream: Input, *, startup: bool
) -> Raw:
    """One stream as a gateway runs it. `startup`: the input stops 1 s after the first output
    frame arrived (a start-up measurement needs no more, and a slow pipeline drains less)."""
    channels = {
        "subscribe_url": (f"{base}{mid}", "video/MP2T"),
        "publish_url": (f"{base}{mid}-out", "video/MP2T"),
        "control_url": (f"{base}{mid}-control", "application/json"),
        "events_url": (f"{base}{mid}-events", "application/json"),
    }
    await _create_channels(http, channels)
    raw = Raw(mid, 0.0)
    readers = [
        asyncio.create_task(_observe(http, channels["publish_url"][0], raw), name=f"{mid}-out"),
        asyncio.create_task(_read_events(http, channels["events_url"][0], raw), name=f"{mid}-events"),
    ]
    try:
        body: dict[str, Any] = {name: url for name, (url, _) in channels.items()}
        body.update(model_id=model_id, params={}, gateway_request_id=mid, stream_id=mid, manifest_id="live-bench")
        async with TricklePublisher(channels["subscribe_url"][0], "video/mp2t", session=http) as pub:
            cpu0 = engine.cpu_seconds()
            raw.t_post = time.monotonic()
            async with http.post(engine.url + "/live-video-to-video", json=body, timeout=HTTP_TIMEOUT) as resp:
                raw.post_status = resp.status
                text = await resp.text()
            raw.post_seconds = time.monotonic() - raw.t_post
            if raw.post_status != 200:
                raise BenchError(f"{mid}: POST /live-video-to-video: HTTP {raw.post_status} {text}")
            stop = asyncio.Event()
            stopper = asyncio.create_task(_stop_after_first_frame(raw, stop)) if startup else None
            try:
                async with asyncio.timeout(stream.paced[-1].end + 30):
                    await _publish(pub, stream.paced, time.monotonic(), raw.sent, stop)
            finally:
                if stopper is not None:
                    stopper.cancel()
                    await asyncio.gather(stopper, return_exceptions=True)
            raw.input_end = time.monotonic()
        # Leaving the block DELETEs the input channel; the orchestrator drops control too.
        await _delete(http, channels["control_url"][0])
        close_timeout = OUTPUT_CLOSE_TIMEOUT.get(model_id, 30.0)
        done, _ = await asyncio.wait([readers[0]], timeout=close_timeout)
        if not done:
            raw.errors.append(f"output channel not closed {close_timeout:.0f} s after the input ended")
        elif readers[0].exception() is not None:
            raw.errors.append(f"output reader: {readers[0].exception()!r}")
        raw.cpu_seconds = engine.cpu_seconds() - cpu0
        await asyncio.wait([readers[1]], timeout=10)
    except TrickleError as exc:
        raw.errors.append(f"trickle: {exc!r}")
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for url, _ in channels.values():
            await _delete(http, url)
    return raw


# --- engine runs ----------------------------------------------------------------------------


async def engine_run(
    http: aiohttp.ClientSession,
    trickle: TrickleServerProcess,
    config: RunConfig,
    measured: Input,
    startup: Input,
    workdir: Path,
    label: str,
    model_dir: Path | None,
) -> dict[str, Any]:
    """A fresh engine: a first stream as soon as it is ready, then the measured stream."""
    engine = Engine(config.model_id, workdir / f"engine-{label}.log", model_dir)
    engine.start()
    raws: list[tuple[Raw, Input]] = []
    result: dict[str, Any] = {"config": config.name, "label": label}
    try:
        ready = await engine.wait_health(http, {"IDLE", "OK"}, READY_TIMEOUT.get(config.model_id, 60.0))
        result["spawn_to_ready_ms"] = round(ready * 1000, 1)
        first = await run_stream(http, engine, trickle.base, f"{label}-first", config.model_id, startup, startup=True)
        raws.append((first, startup))
        await engine.wait_health(http, {"IDLE"}, 30.0)
        sd = config.baseline is None  # start-up figures only
        second = await run_stream(
            http, engine, trickle.base, f"{label}-measured", config.model_id, startup if sd else measured, startup=sd
        )
        raws.append((second, startup if sd else measured))
        await engine.wait_health(http, {"IDLE"}, 30.0)
    except BenchError as exc:
        result["error"] = str(exc)
        print(f"  {label}: {str(exc)[:2000]}", flush=True)
    finally:
        await asyncio.to_thread(engine.stop)
    result["health_states"] = engine.states
    result["sigterm_to_exit_s"] = engine.exit_seconds
    for key, (raw, stream) in zip(("first", "measured"), raws, strict=False):
        result[key] = analyse(raw, stream, spawned=engine.spawned)
        (workdir / f"output-{label}-{key}.ts").write_bytes(b"".join(raw.output))
    return result


# --- the bare loop --------------------------------------------------------------------------


def bare_loop(segments: list[bytes], *, rgb: bool, paced: bool = False) -> dict[str, Any]:
    """PyAV demux + decode -> (RGB round trip) -> libx264 -> MPEG-TS in memory, video only.

    `paced`: each frame waits for its time (frame n at n / FPS s), as at real-time input, where
    every frame starts on caches the rest of the machine has used meanwhile (costlier per frame
    on a shared machine); otherwise frames go through back to back."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    frames = 0
    out = io.BytesIO()
    with av.open(io.BytesIO(b"".join(segments)), "r", format="mpegts") as inp, av.open(out, "w", format="mpegts") as mux:
        vin = inp.streams.video[0]
        vin.codec_context.thread_count = 1
        vout = mux.add_stream("libx264", rate=FPS, options=X264)
        vout.width, vout.height, vout.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vout.time_base = vout.codec_context.time_base = Fraction(1, 90_000)
        for packet in inp.demux(vin):
            for frame in packet.decode():
                if paced and (wait := t0 + frames / FPS - time.perf_counter()) > 0:
                    time.sleep(wait)
                if rgb:
                    pts, tb = frame.pts, frame.time_base
                    frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                    frame.pts, frame.time_base = pts, tb
                mux.mux(vout.encode(frame))
                frames += 1
        mux.mux(vout.encode(None))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {"frames": frames, "cpu_s": cpu, "cpu_ms_per_frame": round(cpu / max(1, frames) * 1000, 3), "fps": round(frames / wall, 1)}


# --- the whole benchmark --------------------------------------------------------------------


def _tiny_streamdiffusion(model_dir: Path) -> None:
    """The tiny random-weight sd-turbo-family model, where the default params look for it."""
    out = model_dir / "stabilityai" / "sd-turbo"
    if (out / "model_index.json").exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*_livestream(), "models", "tiny", "--task", "streamdiffusion", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_env(), cwd=_ENGINE_SRC)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _median(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float))]
    return float(statistics.median(nums)) if nums else None


def _get(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.machine()}, Python {platform.python_version()}, PyAV {av.__version__}"


async def _bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    configs = [CONFIGS[name] for name in args.configs]
    print(f"making the input with ffmpeg: 1 s segments, {WIDTH}x{HEIGHT} {FPS} fps", flush=True)
    longest = max(args.seconds, args.startup_seconds)
    made = {
        key: await asyncio.to_thread(
            partial(Input.make, longest, audio=key[0], bframes=key[1], width=WIDTH, height=HEIGHT, fps=FPS)
        )
        for key in {c.input_key for c in configs}
    }
    inputs = {key: inp.head(args.seconds) for key, inp in made.items()}
    startup = {key: inp.head(args.startup_seconds) for key, inp in made.items()}
    model_dir: Path | None = None
    if any(c.model_id == "streamdiffusion" for c in configs):
        model_dir = workdir / "models"
        print("writing the tiny streamdiffusion model", flush=True)
        await asyncio.to_thread(_tiny_streamdiffusion, model_dir)
    results: dict[str, Any] = {"runs": [], "bare": [], "load_before": os.getloadavg()}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as http:
        trickle = TrickleServerProcess(workdir / "trickle-server.log")
        trickle.start()
        try:
            await trickle.wait_ready(http)
            for r in range(args.rounds):
                for config in configs:
                    if config.baseline is not None and not any(
                        b["round"] == r and b["variant"] == config.baseline for b in results["bare"]
                    ):
                        for paced in (False, True):
                            # The run's own input (the bare loop reads its video only).
                            bare = await asyncio.to_thread(
                                bare_loop, inputs[config.input_key].segments, rgb=config.baseline == "bare-rgb", paced=paced
                            )
                            variant = f"{config.baseline}-paced" if paced else config.baseline
                            results["bare"].append({"round": r, "variant": variant, **bare})
                            print(f"round {r + 1} {variant}: {bare['cpu_ms_per_frame']:.2f} ms/frame", flush=True)
                    label = f"{config.name}-r{r + 1}"
                    sd = config.model_id == "streamdiffusion"
                    run = await engine_run(
                        http, trickle, config, inputs[config.input_key], startup[config.input_key], workdir, label, model_dir if sd else None
                    )
                    run["round"] = r
                    results["runs"].append(run)
                    print(_progress(run), flush=True)
        finally:
            await asyncio.to_thread(trickle.stop)
    results["load_after"] = os.getloadavg()
    return results


def _progress(run: dict[str, Any]) -> str:
    m = run.get("measured") or {}
    d = m.get("delay_ms") or {}
    return (
        f"{run['label']}: ready {run.get('spawn_to_ready_ms')} ms, frames {m.get('frames_matched')}/{m.get('frames_in')}, "
        f"delay p50/p90/p99 {d.get('p50')}/{d.get('p90')}/{d.get('p99')} ms, audio {m.get('audio_out_s')}/{m.get('audio_in_s')} s, "
        f"cpu {m.get('engine_cpu_ms_per_frame')} ms/frame, first frame after POST {m.get('post_to_first_frame_ms')} ms"
        + (f", errors {m.get('errors')}" if m.get("errors") else "")
        + (f", ERROR {run['error'][:200]}" if run.get("error") else "")
    )


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    variants = sorted({b["variant"] for b in results["bare"]})
    bare = {v: _median([b["cpu_ms_per_frame"] for b in results["bare"] if b["variant"] == v]) for v in variants}
    summary["bare_cpu_ms_per_frame"] = bare
    for name in args.configs:
        runs = [r for r in results["runs"] if r["config"] == name]

        def med(path: str, runs: list[dict[str, Any]] = runs) -> float | None:
            return _median([_get(r, path) for r in runs])

        s: dict[str, Any] = {
            "rounds": len(runs),
            "errors": [r.get("error") for r in runs if r.get("error")] + [e for r in runs for e in _get(r, "measured.errors") or []],
            "spawn_to_ready_ms": med("spawn_to_ready_ms"),
            "spawn_to_first_frame_ms": med("first.spawn_to_first_frame_ms"),
            "post_to_first_frame_first_ms": med("first.post_to_first_frame_ms"),
            "post_to_first_frame_second_ms": med("measured.post_to_first_frame_ms"),
        }
        for key in (
            "frames_in", "frames_out", "frames_matched", "dropped", "repeated", "unmatched", "content_checked", "content_verified",
            "audio_in_s", "audio_out_s", "av_offset_ms", "beep_shift_ms", "engine_cpu_ms_per_frame", "delay_first_frame_ms",
            "input_end_to_output_closed_ms", "pts_offset_ticks", "beeps_in", "beeps_out",
        ):
            s[key] = med(f"measured.{key}")
        for q in ("p50", "p90", "p99", "max"):
            s[f"delay_{q}_ms"] = med(f"measured.delay_ms.{q}")
        s["input_reorder_wait_p99_ms"] = med("measured.input_reorder_wait_ms.p99")
        for q in ("p50", "p99"):
            s[f"delay_over_floor_{q}_ms"] = med(f"measured.delay_over_floor_ms.{q}")
        for r in runs:
            m = r.get("measured") or {}
            odd = {k: m.get(k) for k in ("repeated", "unmatched", "out_of_order", "leftover_bytes", "ts_resyncs") if m.get(k)}
            if odd:
                s["errors"].append(f"{r['label']}: {odd}")
        s["engine_e2e_p50_ms"] = _median([(_get(r, "measured.engine_status.e2e_latency_ms") or {}).get("p50") for r in runs])
        config = CONFIGS[name]
        s["baseline"] = config.baseline
        s["baseline_cpu_ms_per_frame"] = bare.get(config.baseline) if config.baseline else None
        s["paced_baseline_cpu_ms_per_frame"] = bare.get(f"{config.baseline}-paced") if config.baseline else None
        # Each run against the bare loop of its own round (the load of this shared machine drifts).
        for key, variant in (("cpu_ratio", config.baseline), ("cpu_ratio_paced", f"{config.baseline}-paced")):
            ratios = []
            for r in runs:
                cpu = _get(r, "measured.engine_cpu_ms_per_frame")
                base = next((b["cpu_ms_per_frame"] for b in results["bare"] if b["round"] == r["round"] and b["variant"] == variant), None)
                if cpu is not None and base:
                    ratios.append(cpu / base)
            s[key] = round(statistics.median(ratios), 2) if ratios else None
        summary[name] = s
    return summary


_NOTES = """\
- frames out / in: output video frames matched to an input frame by pts (the engine keeps the \
input's 90 kHz pts; the offset is searched and was {offset}), over the input's frames; \
content check: {verified} of {checked} decoded output frames look most like the input frame of \
their pts (not its neighbours). dropped = input frames with no output frame.
- delay: per frame, when the output frame's last byte reached the observer (read off the output \
channel as it arrives, 188-byte TS packets) minus when the publisher wrote the input frame's \
last byte (each frame's bytes sent at its dts, as a live encoder emits them). Same process, \
one monotonic clock. It includes what the input itself imposes: a frame is shown after every \
frame of lower pts, and B-frames come after the frames they follow (up to {reorder} ms, p99).
- beyond the input's floor: the same less that floor, per frame (how long after its own bytes \
any decoder could at best show it). With B-frames what is left is the decoder's reorder buffer \
(FFmpeg's H.264 decoder holds as many frames as the SPS's num_reorder_frames, 2 with x264's \
default b-pyramid: 1-2 frames beyond the floor) and the engine; without B-frames, the engine.
- audio out / in: sum of decoded audio frame durations, output vs input.
- A/V offset: (first output audio pts - first output video pts) - (the same for the input). \
beep shift: the input's audio beeps once a second; median of (output beep time - input beep \
time), both read on the pts axis of the decoded audio: how far the audio moved against the \
video (whose pts are kept).
- engine CPU: user+system CPU of the engine's whole process tree (psutil) from just before \
`POST /live-video-to-video` until its output channel closed, per output frame; baseline: this \
process's CPU for PyAV demux+decode -> (RGB round trip) -> libx264 ({x264}) -> MPEG-TS in \
memory, video only, one thread each; engine / bare is the median over rounds of each run's \
ratio to the bare loop of its own round. The paced bare loop is the same loop given each frame at \
its time (frame n at n/{fps} s), as the engine gets them at real-time input: on a shared machine \
each frame then starts on caches other processes used meanwhile, which costs the loop itself more \
per frame.
- start-up: spawn of `livestream serve` -> /health IDLE (polled every 50 ms); spawn -> first \
output frame of a stream started (and fed) as soon as /health said IDLE; POST -> first output \
frame for that first stream and for the next one on the same process."""


def report(results: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace, command: str, engine: str) -> str:
    load = results["load_before"], results["load_after"]
    lines = [
        f"Machine: {_machine()}; load average {', '.join(f'{x:.1f}' for x in load[0])} before, "
        f"{', '.join(f'{x:.1f}' for x in load[1])} after. Engine: {engine}. Command: `{command}`. "
        f"{args.rounds} round(s), medians; {args.seconds} s streams of {WIDTH}x{HEIGHT} {FPS} fps H.264 (+ AAC) from ffmpeg.",
        "",
        "| run | frames out / in | dropped | delay p50 / p90 / p99 ms | beyond the input's floor p50 / p99 ms "
        "| audio out / in s | A/V offset ms (pts / beep) "
        "| engine CPU ms/frame | bare loop ms/frame | engine / bare | paced bare ms/frame | engine / paced bare |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.configs:
        s = summary[name]
        if CONFIGS[name].baseline is None:
            continue
        audio = f"{_fmt(s['audio_out_s'], 2)} / {_fmt(s['audio_in_s'], 2)}" if CONFIGS[name].audio else "— (video-only input)"
        beeps = f" ({_fmt(s['beeps_out'])} of {_fmt(s['beeps_in'])} beeps)" if s["beeps_out"] != s["beeps_in"] else ""
        avo = f"{_fmt(s['av_offset_ms'])} / {_fmt(s['beep_shift_ms'])}{beeps}" if CONFIGS[name].audio else "—"
        lines.append(
            f"| {name} | {_fmt(s['frames_matched'])} / {_fmt(s['frames_in'])} | {_fmt(s['dropped'])} | "
            f"{_fmt(s['delay_p50_ms'])} / {_fmt(s['delay_p90_ms'])} / {_fmt(s['delay_p99_ms'])} | "
            f"{_fmt(s['delay_over_floor_p50_ms'])} / {_fmt(s['delay_over_floor_p99_ms'])} | {audio} | {avo} | "
            f"{_fmt(s['engine_cpu_ms_per_frame'], 2)} | {_fmt(s['baseline_cpu_ms_per_frame'], 2)} ({s['baseline']}) | "
            f"{_fmt(s['cpu_ratio'], 2)}x | {_fmt(s['paced_baseline_cpu_ms_per_frame'], 2)} | {_fmt(s['cpu_ratio_paced'], 2) + 'x' if s.get('cpu_ratio_paced') is not None else '—'} |"
        )
    lines += [
        "",
        "| pipeline | spawn → /health IDLE ms | spawn → first output frame ms | POST → first frame ms, first stream "
        "| POST → first frame ms, second stream |",
        "|---|---|---|---|---|",
    ]
    for name in args.configs:
        s = summary[name]
        if name == "noop-video":
            continue
        label = f"{name} (tiny random-weight model, CPU)" if name == "streamdiffusion" else name
        lines.append(
            f"| {label} | {_fmt(s['spawn_to_ready_ms'])} | {_fmt(s['spawn_to_first_frame_ms'])} | "
            f"{_fmt(s['post_to_first_frame_first_ms'])} | {_fmt(s['post_to_first_frame_second_ms'])} |"
        )
    first = next((summary[n] for n in args.configs if CONFIGS[n].baseline), None) or {}
    lines += [
        "",
        _NOTES.format(
            offset=", ".join(sorted({str(_fmt(summary[n]['pts_offset_ticks'])) for n in args.configs if CONFIGS[n].baseline})),
            verified=_fmt(first.get("content_verified")),
            checked=_fmt(first.get("content_checked")),
            reorder=_fmt(first.get("input_reorder_wait_p99_ms")),
            x264=", ".join(f"{k}={v}" for k, v in X264.items()),
            fps=FPS,
        ),
    ]
    problems = [f"{n}: {e}" for n in args.configs for e in summary[n]["errors"]]
    if problems:
        lines += ["", "Problems seen:", *[f"- {p[:300]}" for p in problems]]
    diag = [
        f"{n} {_fmt(summary[n]['engine_e2e_p50_ms'], 1)} ms" for n in args.configs if summary[n]["engine_e2e_p50_ms"] is not None
    ]
    if diag:
        lines += ["", f"Diagnosis only (the engine's own in-session e2e p50, from its final status event): {', '.join(diag)}."]
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks live_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per configuration, alternated; default %(default)s")
    parser.add_argument("--seconds", type=int, default=10, help="length of the measured stream (1 s segments); default %(default)s")
    parser.add_argument(
        "--startup-seconds",
        type=int,
        default=30,
        help="the most input a start-up stream gets (it stops 1 s after the first output frame); default %(default)s",
    )
    parser.add_argument(
        "--configs",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(CONFIGS),
        help=f"comma-separated, from {','.join(CONFIGS)}; default all",
    )
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md and logs; default a new temp folder")
    parser.add_argument(
        "--report", type=Path, metavar="RESULTS_JSON", help="only print the tables of an earlier run's results.json"
    )
    parser.add_argument(
        "--engine-commit",
        metavar="REV",
        help="run the engine (and the tiny-model writer) from this commit, exported with `git archive`, "
        "instead of the installed working tree; e.g. HEAD while the tree has uncommitted edits",
    )
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    if min(args.rounds, args.seconds, args.startup_seconds) < 1:
        parser.error("--rounds, --seconds and --startup-seconds must be >= 1")
    return args


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops its subprocesses."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv or [])
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        old = argparse.Namespace(**saved["args"])
        print(report(saved, summarise(saved, old), old, saved["command"], saved["engine_source"]))
        return
    if shutil.which("ffmpeg") is None:
        raise SystemExit("live_bench needs the ffmpeg binary (the input is made by ffmpeg)")
    workdir = args.out.resolve() if args.out else Path(tempfile.mkdtemp(prefix=f"live_bench-{time.strftime('%Y%m%d-%H%M%S')}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks live_bench" + ("" if not argv else " " + " ".join(argv))
    engine_source = "installed (working tree)"
    if args.engine_commit:
        global _ENGINE_SRC
        sha, _ENGINE_SRC = export_commit(args.engine_commit, workdir)
        engine_source = f"commit {sha}"
        print(f"engine from {engine_source} ({_ENGINE_SRC})", flush=True)
    try:
        with _terminate_as_interrupt():
            results = asyncio.run(_bench(args, workdir))
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted; logs in {workdir}") from None
    finally:
        _stop_all()
    summary = summarise(results, args)
    text = report(results, summary, args, command, engine_source)
    results["summary"] = summary
    results["machine"] = _machine()
    results["command"] = command
    results["engine_source"] = engine_source
    results["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (workdir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (workdir / "results.md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nresults: {workdir / 'results.json'} (engine logs next to it)")


if __name__ == "__main__":
    main(sys.argv[1:])
