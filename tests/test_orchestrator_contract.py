"""The container contract, end to end, with this test playing a go-livepeer orchestrator.

As `ai/worker/docker.go` does, the test starts runners as separate processes with a
container's environment (PIPELINE, MODEL_ID, MODEL_DIR=HUGGINGFACE_HUB_CACHE, VERSION,
VERBOSE_LOGGING, HF_HUB_OFFLINE=1; the image's `CMD` is `livestream serve`, no flags), one per
pipeline, then:

- polls `/health` every 500 ms until the runner answers and while it is LOADING
  (`runnerWaitUntilReady`; ERROR fails the start), each answer well within the 5 s health-check
  timeout: a batch runner answers OK once its model is loaded (as ai-runner's), a live runner
  LOADING then IDLE, a runner whose model cannot load ERROR; then reads `/hardware/info` and
  `/version` (`NewRunnerContainer`);
- runs a batch job on the text-to-image runner (bearer token, as for an aiModels `token`);
- on the live runner, hosts the stream's channels itself on a standalone trickle server
  (`livestream trickle-server --base-path /ai/trickle/`, over HTTPS with a self-signed
  certificate, as an orchestrator serves it): `{id}`, `{id}-out`, `{id}-control`
  and `{id}-events` are created before `POST /live-video-to-video`, as `server/ai_http.go`
  does; publishes MPEG-TS into `{id}`, sends control keepalives and a params update, reads the
  events channel as the gateway's heartbeat, decodes `{id}-out`, stops the stream by closing its
  channels and sees `/health` return to IDLE (`watchContainer` gives the runner back);
- `/metrics` after the batch job and during the live stream;
- `PREPARE_MODELS=1` and `livestream prepare`: a local model exits 0, an unknown id offline
  fails fast with a clear message, a cached one offline exits 0.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from livestream.live.testsrc import decode_ts, make_ts_segments, read_number
from pipelines.testing import write_tiny_model
from trickle import TricklePublisher, TrickleSubscriber

pytestmark = pytest.mark.timeout(180)

#: go-livepeer's runnerWaitUntilReady / watchContainer figures (ai/worker/docker.go).
POLLING_INTERVAL = 0.5
HEALTHCHECK_TIMEOUT = 5.0
#: Our bound for a runner to get past LOADING here (go-livepeer allows 3 minutes).
READY_TIMEOUT = 90.0
TOKEN = "orchestrator-secret"
VERSION = "9.9.9-contract"
TINY_MODEL_ID = "livestream-test/tiny-sd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_env(model_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a runner container: the image's variables plus what docker.go sets."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE", "MODEL_ID", "AUTH_TOKEN", "PREPARE_MODELS")}
    env.update(
        MODEL_DIR=str(model_dir),
        HUGGINGFACE_HUB_CACHE=str(model_dir),
        HF_HUB_OFFLINE="1",
        HOST="127.0.0.1",
        VERSION=VERSION,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@dataclass
class Runner:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    started: float
    states: list[str] = field(default_factory=list)
    health_latency: list[float] = field(default_factory=list)
    first_answer_s: float | None = None
    ready_s: float | None = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def start_runner(name: str, tmp: Path, model_dir: Path, **env: str) -> Runner:
    port = free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livestream", "serve"],
            env=container_env(model_dir, PORT=str(port), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Runner(name, proc, f"http://127.0.0.1:{port}", log, time.monotonic())


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def health(http: aiohttp.ClientSession, runner: Runner) -> str | None:
    """One health check as docker.go makes it: None for a transport error or a non-200."""
    t0 = time.monotonic()
    try:
        async with http.get(runner.url + "/health", timeout=aiohttp.ClientTimeout(total=HEALTHCHECK_TIMEOUT)) as resp:
            if resp.status != 200:
                return None
            status: str = (await resp.json())["status"]
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    runner.health_latency.append(time.monotonic() - t0)
    if runner.first_answer_s is None:
        runner.first_answer_s = time.monotonic() - runner.started
    runner.states.append(status)
    return status


async def wait_until(http: aiohttp.ClientSession, runner: Runner, wanted: set[str], timeout: float = READY_TIMEOUT) -> str:
    """Poll /health every 500 ms until it answers one of `wanted` (LOADING and errors retried)."""
    deadline = time.monotonic() + timeout
    while True:
        if runner.proc.poll() is not None:
            raise AssertionError(f"{runner.name} exited with {runner.proc.returncode}:\n{runner.tail()}")
        status = await health(http, runner)
        if status in wanted:
            runner.ready_s = time.monotonic() - runner.started
            return status
        assert status in (None, "LOADING", "OK", "IDLE", "ERROR"), status
        if time.monotonic() > deadline:
            raise AssertionError(f"{runner.name}: {wanted} not reached; states {runner.states[-5:]}\n{runner.tail()}")
        await asyncio.sleep(POLLING_INTERVAL)


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    async with http.get(url, **kw) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def scrape(http: aiohttp.ClientSession, runner: Runner) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get(runner.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def metric(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def check_hardware(info: dict[str, Any], pipeline: str, model_id: str) -> None:
    assert info["pipeline"] == pipeline and info["model_id"] == model_id
    gpus = info["gpu_info"]
    # Keyed by device index, each with the GPU UUID (what go-livepeer shows per runner); none here.
    for key, gpu in gpus.items():
        assert key.isdigit()
        assert gpu["id"].startswith("GPU-") and gpu["memory_total"] > 0
        assert set(gpu) == {"id", "name", "memory_total", "memory_free", "major", "minor"}


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """The orchestrator's models folder (bind-mounted at /models)."""
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # The orchestrator's trickle server has a self-signed certificate: no verification.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        yield session


def self_signed_cert(tmp: Path) -> list[str]:
    """trickle-server TLS flags with a fresh self-signed certificate (go-livepeer makes one too)."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:  # all at once (docker stop sends SIGTERM; the engine ends on SIGINT/SIGTERM)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        stop_process(proc)


# --- the orchestrator's side -----------------------------------------------------------------


async def test_orchestrator_runs_batch_and_live_runners(
    tmp_path: Path, model_dir: Path, http: aiohttp.ClientSession, processes: list[subprocess.Popen[bytes]]
) -> None:
    trickle_port = free_port()
    tls = self_signed_cert(tmp_path)
    with (tmp_path / "trickle.log").open("wb") as out:
        trickle = subprocess.Popen(
            [sys.executable, "-m", "livestream", "trickle-server", "--port", str(trickle_port), "--base-path", "/ai/trickle/", *tls],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(trickle)
    live = start_runner("live", tmp_path, model_dir, PIPELINE="live-video-to-video", MODEL_ID="noop")
    broken = start_runner("broken", tmp_path, model_dir, PIPELINE="text-to-image", MODEL_ID="acme/not-downloaded")
    processes.extend([live.proc, broken.proc])
    # The operator's prepared model (a tiny random-weight SD), written while those start.
    await asyncio.to_thread(write_tiny_model, "text-to-image", model_dir / TINY_MODEL_ID)
    batch = start_runner(
        "batch", tmp_path, model_dir, PIPELINE="text-to-image", MODEL_ID=TINY_MODEL_ID, AUTH_TOKEN=TOKEN, VERBOSE_LOGGING="1"
    )
    processes.append(batch.proc)

    # runnerWaitUntilReady: connection errors are retried; any 200 other than ERROR ends it
    # (LOADING: "borrowed, no jobs" until watchContainer sees IDLE); then watchContainer.
    await asyncio.gather(
        wait_until(http, batch, {"OK", "ERROR"}),
        wait_until(http, live, {"IDLE", "ERROR"}),
        wait_until(http, broken, {"ERROR", "OK"}),
    )
    # A batch runner listens once its model is loaded, as ai-runner's: never LOADING, which would
    # keep a warm runner out of go-livepeer's pool (only IDLE returns it; batch runners say OK).
    assert batch.states == ["OK"], batch.states
    assert set(live.states) <= {"LOADING", "IDLE"} and live.states[-1] == "IDLE", live.states
    assert broken.states == ["ERROR"], broken.states  # a failed load: ERROR, destroyed at once
    assert "acme/not-downloaded" in broken.tail() and "HF_HUB_OFFLINE" in broken.tail()
    for runner in (batch, live, broken):
        assert max(runner.health_latency) < HEALTHCHECK_TIMEOUT, (runner.name, runner.health_latency)
        print(
            f"{runner.name}: first /health answer {runner.first_answer_s:.1f} s, {runner.states[-1]} at "
            f"{runner.ready_s:.1f} s, slowest health check {max(runner.health_latency) * 1000:.0f} ms"
        )
    stop_process(broken.proc)

    for runner, pipeline, model_id in ((batch, "text-to-image", TINY_MODEL_ID), (live, "live-video-to-video", "noop")):
        check_hardware(await get_json(http, runner.url + "/hardware/info"), pipeline, model_id)
        stats = await get_json(http, runner.url + "/hardware/stats")
        assert stats["pipeline"] == pipeline and isinstance(stats["gpu_stats"], dict)
        assert await get_json(http, runner.url + "/version") == {"pipeline": pipeline, "model_id": model_id, "version": VERSION}

    await run_batch_job(http, batch)
    assert " DEBUG " in batch.tail()  # VERBOSE_LOGGING=1
    await run_live_stream(http, live, f"https://127.0.0.1:{trickle_port}/ai/trickle/")


async def run_batch_job(http: aiohttp.ClientSession, batch: Runner) -> None:
    body = {"prompt": "a lighthouse", "model_id": TINY_MODEL_ID, "height": 64, "width": 64, "num_inference_steps": 2, "seed": 7}
    async with http.post(batch.url + "/text-to-image", json=body) as resp:
        assert resp.status == 401  # the runner's AUTH_TOKEN: the orchestrator sends aiModels' `token`
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(batch.url + "/text-to-image", json=body, headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        [image] = (await resp.json())["images"]
    assert image["seed"] == 7
    header, _, data = image["url"].partition(",")
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 64)

    m = await scrape(http, batch)
    assert metric(m, "livestream_http_requests_total", method="POST", route="/text-to-image", status="200") == 1
    assert metric(m, "livestream_http_requests_total", method="POST", route="/text-to-image", status="401") == 1
    assert metric(m, "livestream_http_request_duration_seconds_count", method="POST", route="/text-to-image") == 2
    assert (metric(m, "livestream_http_requests_total", method="GET", route="/health", status="200") or 0) >= 1
    assert metric(m, "livestream_model_loaded", task="text-to-image", model_id=TINY_MODEL_ID) == 1
    assert metric(m, "livestream_model_busy", task="text-to-image", model_id=TINY_MODEL_ID) == 0
    assert metric(m, "livestream_model_queue_depth", task="text-to-image", model_id=TINY_MODEL_ID) == 0
    assert (metric(m, "livestream_model_load_seconds", task="text-to-image", model_id=TINY_MODEL_ID) or 0) > 0
    assert metric(m, "livestream_models_loaded") == 1
    assert metric(m, "livestream_health", status="OK") == 1
    assert metric(m, "version", app="livestream", version=VERSION) == 1
    assert not [k for k in m if k[0].startswith("livestream_gpu_")]  # no GPU on this machine
    assert (metric(m, "process_resident_memory_bytes") or 0) > 0


async def run_live_stream(http: aiohttp.ClientSession, live: Runner, base: str) -> None:
    mid = "contract-stream"
    channels = {
        "subscribe_url": (f"{base}{mid}", "video/MP2T"),
        "publish_url": (f"{base}{mid}-out", "video/MP2T"),
        "control_url": (f"{base}{mid}-control", "application/json"),
        "events_url": (f"{base}{mid}-events", "application/json"),
    }
    for url, mime in channels.values():  # the orchestrator creates all four before the start call
        async with http.post(url, headers={"Expect-Content": mime}) as resp:
            assert resp.status == 200, await resp.text()
    segments = make_ts_segments(frames=90, width=128, height=128)
    out: list[bytes] = []
    events: list[dict[str, Any]] = []
    readers = [
        asyncio.create_task(read_channel(http, channels["publish_url"][0], out)),
        asyncio.create_task(read_events(http, channels["events_url"][0], events)),
    ]
    async with (
        TricklePublisher(channels["subscribe_url"][0], "video/mp2t", session=http) as video,
        TricklePublisher(channels["control_url"][0], "application/json", session=http) as control,
    ):
        start: dict[str, Any] = {name: url for name, (url, _) in channels.items()}
        start.update(model_id="noop", params={}, gateway_request_id=mid, stream_id=mid, manifest_id="m1")
        async with http.post(live.url + "/live-video-to-video", json=start) as resp:
            assert resp.status == 200, await resp.text()
        await send(control, b'{"keep":"alive"}')
        await publish(video, segments[0])
        await until(lambda: any(e["event"].get("type") == "status" for e in events))
        assert await health(http, live) == "OK"  # streaming

        # An update mid-stream: the output size changes (noop keeps everything else).
        await send(control, b'{"width": 96, "height": 96}')
        await send(control, b'{"keep":"alive"}')
        await until(lambda: params_applied(http, live, mid))
        m = await scrape(http, live)
        for segment in segments[1:]:  # at real-time pace: 1-second segments, one a second
            t0 = time.monotonic()
            await publish(video, segment)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        assert metric(m, "livestream_live_sessions") == 1
        assert metric(m, "livestream_health", status="OK") == 1
        assert (metric(m, "livestream_live_frames_in_total", stream_id=mid, pipeline="noop") or 0) >= 30
        assert (metric(m, "livestream_live_frames_out_total", stream_id=mid, pipeline="noop") or 0) >= 1
        assert metric(m, "livestream_live_dropped_frames_total", stream_id=mid, pipeline="noop") == 0
        assert metric(m, "livestream_live_input_fps", stream_id=mid, pipeline="noop") is not None
        assert metric(m, "livestream_http_requests_total", method="POST", route="/live-video-to-video", status="200") == 1
    # Leaving the block closes (DELETEs) the input and control channels: the stream is over.
    async with asyncio.timeout(20):
        await asyncio.gather(*readers)

    frames, _, _ = decode_ts(b"".join(out))
    final = [e["event"] for e in events if e["event"]["type"] == "status"][-1]
    assert final.get("final") and final["end_reason"] == "input ended" and final["frames_in"] == 90
    # A live engine drops frames rather than fall behind real time (a loaded 2-core machine
    # here): every frame is either out, in order, or counted as dropped.
    numbers = [read_number(f) for f in frames]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0 and set(numbers) <= set(range(90))
    assert len(frames) == final["frames_out"] and final["frames_out"] + final["dropped_frames"] == 90
    assert final["frames_out"] >= 45, final
    assert frames[0].shape == (128, 128, 3) and frames[-1].shape == (96, 96, 3)  # the update took effect
    kinds = [e["event"]["type"] for e in events]
    assert kinds.count("status") >= 2 and "runner_receive_stream_request" in kinds
    assert final["control_messages"] >= 1  # the update (keepalives are dropped, as ai-runner does)

    await wait_until(http, live, {"IDLE"}, timeout=15)  # watchContainer returns it to the pool
    m = await scrape(http, live)
    assert metric(m, "livestream_live_sessions") == 0 and metric(m, "livestream_health", status="IDLE") == 1


async def read_channel(http: aiohttp.ClientSession, url: str, out: list[bytes]) -> None:
    async with TrickleSubscriber(url, session=http) as sub:
        async for segment in sub:
            out.append(await segment.read())


async def read_events(http: aiohttp.ClientSession, url: str, events: list[dict[str, Any]]) -> None:
    """The gateway's side of the events channel: every segment is one event (the heartbeat)."""
    async with TrickleSubscriber(url, session=http) as sub:
        async for segment in sub:
            data = await segment.read()
            if data:
                events.append(json.loads(data))


async def publish(pub: TricklePublisher, data: bytes) -> None:
    async with pub.segment() as seg:
        for i in range(0, len(data), 16384):
            await seg.write(data[i : i + 16384])


async def send(pub: TricklePublisher, message: bytes) -> None:
    async with pub.segment() as seg:
        await seg.write(message)


async def params_applied(http: aiohttp.ClientSession, live: Runner, mid: str) -> bool:
    status = await get_json(http, f"{live.url}/live/{mid}/status")
    return bool(status["params"].get("width") == 96)


async def until(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


# --- PREPARE_MODELS=1 / livestream prepare ----------------------------------------------------


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livestream", *args], env=env, capture_output=True, text=True, timeout=90
    )


def test_prepare_models(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from livestream.cli import main

    local = model_dir / "acme" / "local-sd"  # a prepared folder: nothing to download
    local.mkdir(parents=True)
    (local / "model_index.json").write_text("{}")

    # The container way, in its own process: PREPARE_MODELS=1 with the runner's PIPELINE/MODEL_ID.
    env = container_env(model_dir, PIPELINE="text-to-image", MODEL_ID="acme/local-sd", PREPARE_MODELS="1")
    done = run_cli(["serve"], env)
    assert done.returncode == 0, done.stderr
    assert "local:" in done.stdout and "models ready" in done.stdout
    # Optional extras (safety checker) that are not cached are reported, not fatal.
    assert "skipped (optional)" in done.stdout

    # An id neither local nor cached, offline: a clear error at once, non-zero exit.
    t0 = time.monotonic()
    failed = run_cli(["prepare", "--pipeline", "text-to-image", "--model-id", "acme/never-downloaded"], container_env(model_dir))
    assert failed.returncode == 1
    assert "acme/never-downloaded" in failed.stderr and "HF_HUB_OFFLINE" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert time.monotonic() - t0 < 60

    # The rest in this process (same code path, no interpreter start each).
    for name in ("PIPELINE", "MODEL_ID", "PREPARE_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODEL_DIR", str(model_dir))

    def prepare(*args: str) -> tuple[int, str, str]:
        code = main(["prepare", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    # A repository already in the cache (hf download's layout) is found offline.
    repo = model_dir / "models--acme--cached"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    code, out, err = prepare("--pipeline", "llm", "--model-id", "acme/cached")
    assert code == 0 and "cached:" in out, err

    # Live pipelines: noop needs nothing; streamdiffusion's weights are not cached here.
    code, out, _ = prepare("--pipeline", "live-video-to-video", "--model-id", "noop")
    assert code == 0 and "no model weights needed" in out
    code, out, err = prepare("--pipeline", "live-video-to-video", "--model-id", "streamdiffusion")
    assert code == 1 and "stabilityai/sd-turbo" in err

    # An orchestrator's aiModels.json: external runners (`url`) are skipped.
    ai_models = tmp_path / "aiModels.json"
    ai_models.write_text(
        json.dumps(
            [
                {"pipeline": "text-to-image", "model_id": "acme/local-sd", "warm": True, "price_per_unit": 4768371, "pixels_per_unit": 1},
                {"pipeline": "live-video-to-video", "model_id": "noop", "warm": True},
                {"pipeline": "llm", "model_id": "acme/elsewhere", "url": "http://10.0.0.5:8000", "token": "x"},
            ]
        )
    )
    code, out, err = prepare("--ai-models", str(ai_models))
    assert code == 0, err
    assert "acme/elsewhere" not in out and "noop" in out and "acme/local-sd" in out

    # A pipeline ai-runner does not know is refused before anything starts.
    assert main(["prepare", "--pipeline", "frame-interpolation", "--model-id", "x"]) == 2
    assert "not a valid pipeline" in capsys.readouterr().err


def test_select_files() -> None:
    from pipelines.prepare import select_files

    files = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "text_encoder/model.safetensors",
        "text_encoder/pytorch_model.bin",
        "vae/diffusion_pytorch_model.bin",
        "sd_turbo.safetensors",
        "sd_turbo.ckpt",
        "onnx/unet/model.onnx",
        "flax_model.msgpack",
        "tokenizer/vocab.json",
    ]
    assert select_files(files) == [
        "model_index.json",
        "sd_turbo.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.bin",
    ]
    fp16 = select_files(files, "fp16")
    assert "unet/diffusion_pytorch_model.safetensors" not in fp16
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fp16 and "text_encoder/model.safetensors" in fp16
