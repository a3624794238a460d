"""audio-to-text: real-time factor, and what the engine adds to the bare model call.

    python -m benchmarks asr_bench

Model: a random-weight Whisper written by `pipelines.testing.audio.write_tiny_whisper`, smaller
than whisper-tiny so that a run fits a shared 2-core VM (d_model 256, 2+2 layers, 4 heads,
large-v3's 128 mel bins, the full 30 s / 1500-position encoder), generating up to 48 tokens per
window (random weights rarely stop early, so every window generates all 48). Greedy decoding:
every path generates the same tokens. The real-time factor is this model's, not whisper-large's;
the overhead columns are what the engine adds to any model.

Clips: stereo 44.1 kHz MP3s of 10 s (one window) and 40 s (chunked: two 30 s windows in one
batch), generated with PyAV. In one run, on the same machine, alternating per round:

- bare: the transformers ASR pipeline called on already-decoded 16 kHz samples with the same
  arguments (what the model costs; ai-runner's pipeline does this after converting the file);
- decode: PyAV decoding + resampling of the upload alone (`pipelines.batch.audio.decode_audio`);
- pipeline: `AudioToTextPipeline.transcribe` on the file's bytes (decode + model + answer);
- HTTP: `POST /audio-to-text` (multipart) to `livestream serve --pipeline audio-to-text` in a
  child process over loopback, until the JSON answer is read.

Both processes run torch with one thread (see `THREADS`). Wall times on a shared VM swing by
2x between identical calls, so CPU seconds are reported too (this process's for the in-process
paths, the server process's for HTTP): the engine's overhead is the server's CPU for a request
minus the bare call's CPU. Real-time factor = CPU seconds of the bare call / seconds of audio
(below 1: faster than real time).
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from ._common import free_port

__all__ = ["main"]

ROUNDS = 3
CLIPS_S = (10.0, 40.0)
#: torch threads in both processes. On a shared 2-core VM, 2 threads spin against other work and
#: run up to 10x slower than 1; one thread each gives stable numbers.
THREADS = 1


def _mp3(seconds: float, rate: int = 44100) -> bytes:
    import numpy as np

    from pipelines.testing.media_files import encode_audio

    t = np.arange(int(seconds * rate)) / rate
    # A chirp and a tremolo: not speech, but not a constant either.
    left = 0.3 * np.sin(2 * np.pi * (220 + 40 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    samples = np.asarray([left, 0.3 * np.sin(2 * np.pi * 330 * t)], dtype=np.float32)
    return encode_audio(samples, rate, "mp3", "libmp3lame")


async def _wait_ok(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with session.get(url + "/health") as resp:
                    if (await resp.json())["status"] == "OK":
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("server did not become healthy")


async def _post(session: Any, url: str, data: bytes, mode: str) -> tuple[float, dict[str, Any]]:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("audio", data, filename="clip.mp3", content_type="audio/mpeg")
    form.add_field("return_timestamps", mode)
    started = time.perf_counter()
    async with session.post(url + "/audio-to-text", data=form) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return time.perf_counter() - started, body


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def _run(model: Path, port: int) -> list[dict[str, Any]]:
    import aiohttp
    import psutil

    from pipelines.batch.audio import decode_audio
    from pipelines.batch.audio_to_text import AudioToTextInput, AudioToTextPipeline

    pipeline = AudioToTextPipeline(str(model), device="cpu")
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(THREADS))
    cmd = [sys.executable, "-m", "livestream", "--log-level", "WARNING", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--pipeline", "audio-to-text", "--model-id", str(model)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = psutil.Process(proc.pid)
    rows: list[dict[str, Any]] = []
    try:
        await _wait_ok(url, proc)
        async with aiohttp.ClientSession() as session:
            for seconds in CLIPS_S:
                data = _mp3(seconds)
                samples = decode_audio(data, pipeline.sampling_rate)
                for mode in ("true", "word") if seconds == CLIPS_S[0] else ("true",):
                    stamps: bool | str = True if mode == "true" else "word"
                    kwargs = pipeline._call_kwargs(stamps, seconds)
                    gen = {"max_new_tokens": pipeline._max_new_tokens}
                    times: dict[str, list[float]] = {k: [] for k in ("bare", "bare_cpu", "decode_cpu", "pipeline_cpu", "http", "http_cpu")}
                    await _post(session, url, data, mode)  # warm-up
                    for _ in range(ROUNDS):
                        wall, cpu = time.perf_counter(), time.process_time()
                        bare = pipeline._asr(
                            {"raw": samples, "sampling_rate": pipeline.sampling_rate},
                            return_timestamps=stamps,
                            generate_kwargs=gen,
                            **kwargs,
                        )
                        times["bare"].append(time.perf_counter() - wall)
                        times["bare_cpu"].append(time.process_time() - cpu)
                        cpu = time.process_time()
                        decode_audio(data, pipeline.sampling_rate)
                        times["decode_cpu"].append(time.process_time() - cpu)
                        cpu = time.process_time()
                        ours = pipeline.transcribe(AudioToTextInput(data, stamps))
                        times["pipeline_cpu"].append(time.process_time() - cpu)
                        before = server.cpu_times()
                        elapsed, body = await _post(session, url, data, mode)
                        after = server.cpu_times()
                        times["http"].append(elapsed)
                        times["http_cpu"].append(after.user + after.system - before.user - before.system)
                        assert body["text"] == ours["text"] == bare["text"], "paths disagree"
                        print(
                            f"  {seconds:.0f} s {mode}: bare {times['bare'][-1]:.2f} s ({times['bare_cpu'][-1]:.2f} CPU), "
                            f"http {elapsed:.2f} s ({times['http_cpu'][-1]:.2f} CPU)",
                            file=sys.stderr,
                            flush=True,
                        )
                    print(f"  {seconds:.0f} s, timestamps={mode}: done", file=sys.stderr, flush=True)
                    rows.append({"seconds": seconds, "mode": mode, "chunks": len(ours["chunks"]), **times})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from pipelines.testing.audio import write_tiny_whisper

    torch.set_num_threads(THREADS)

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "whisper-random-256x2"
        write_tiny_whisper(model, d_model=256, layers=2, max_new_tokens=48)
        rows = asyncio.run(_run(model, free_port()))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average {load:.1f}; "
        f"median of {ROUNDS} rounds"
    )
    print()
    print("| clip | timestamps | bare model call: wall / CPU | decode CPU | pipeline CPU | HTTP: wall / server CPU | RTF (bare CPU) | engine CPU over bare |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        bare, bare_cpu, decode, pipe, http, http_cpu = (
            _median_ms(row[k]) for k in ("bare", "bare_cpu", "decode_cpu", "pipeline_cpu", "http", "http_cpu")
        )
        print(
            f"| {row['seconds']:.0f} s MP3 | {row['mode']} | {bare:.0f} / {bare_cpu:.0f} ms | {decode:.0f} ms | "
            f"{pipe:.0f} ms | {http:.0f} / {http_cpu:.0f} ms | {bare_cpu / 1000 / row['seconds']:.3f} | "
            f"{http_cpu - bare_cpu:+.0f} ms ({(http_cpu / bare_cpu - 1) * 100:+.1f}%) |"
        )

if __name__ == "__main__":
    main()
