"""Live runner units: Go durations, the config's checks, the CLI flags, and backoff while the
orchestrator is unreachable."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from livestream.cli import build_parser, settings_from_args
from livestream.errors import ConfigError
from livestream.liverunner import live_runner_config
from livestream.liverunner.config import HeartbeatResponse, LiveRunnerConfig, parse_go_duration
from livestream.liverunner.registration import Registration
from livestream.liverunner.sessions import RunnerSessions
from livestream.liverunner.client import LiveRunnerClient

from liverunner_helpers import free_port
from liverunner_standin import StandinOrchestrator, validate_heartbeat


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5.0), ("20s", 20.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5h", 5400.0), ("0", 0.0)]
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "1m 30s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_heartbeat_response_parses_first_registration() -> None:
    answer = HeartbeatResponse.parse(
        {
            "runner_id": "runner_abc",
            "orchestrator": "https://o:8935",
            "heartbeat_interval": "5s",
            "heartbeat_ttl": "20s",
            "heartbeat_secret": "s",
            "o2r": {"name": "o2r", "channel_name": "c", "url": "https://o:8935/ai/trickle/c"},
            "session_ids": [],
        }
    )
    assert (answer.interval, answer.ttl, answer.heartbeat_secret) == (5.0, 20.0, "s")
    assert answer.o2r_url == "https://o:8935/ai/trickle/c"


def _config(**kwargs: Any) -> LiveRunnerConfig:
    base: dict[str, Any] = dict(orch_addr="https://o:8935", orch_secret="s", runner_url="http://me:8000", app="live-video-to-video/noop")
    return LiveRunnerConfig(**(base | kwargs))


def test_payload_passes_the_orchestrators_validation() -> None:
    from livestream.liverunner import parse_price

    config = _config(capacity=4, metadata="é" * 512, price_info=parse_price("0.02/720p"), version="1.2.3")
    body = config.heartbeat_body(runner_id="", status="unavailable", session_ids=[], gpu={"id": "GPU-1", "name": "H100", "vram_mb": 81559})
    assert validate_heartbeat(body) is None
    assert "runner_id" not in body  # the orchestrator picks one on bootstrap


@pytest.mark.parametrize(
    "kwargs",
    [
        {"runner_url": "me:8000"},
        {"orch_addr": "ftp://o"},
        {"orch_secret": ""},
        {"app": " live-video-to-video/noop"},
        {"capacity": 0},
        {"metadata": "x" * 1025},
    ],
)
def test_config_refuses(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        _config(**kwargs)


def test_cli_flags_and_env() -> None:
    env = {"ORCH_ADDR": "https://o:8935", "ORCH_SECRET": "s", "RUNNER_URL": "http://me:8000/r", "RUNNER_APP": "live-video-to-video/noop", "RUNNER_CAPACITY": "3"}
    settings = settings_from_args(build_parser(env).parse_args(["serve"]))
    assert (settings.pipeline, settings.model_id, settings.live_session_limit) == ("live-video-to-video", "noop", 3)
    config = live_runner_config(settings)
    assert config is not None and config.capacity == 3 and config.route_prefix == "/r"
    args = build_parser({}).parse_args(
        ["serve", "--orch-addr", "https://o:8935", "--orch-secret", "s", "--runner-url", "http://me:8000", "--app", "live-video-to-video/streamdiffusion", "--capacity", "2"]
    )
    assert settings_from_args(args).runner_capacity == 2
    with pytest.raises(ConfigError):
        settings_from_args(build_parser({}).parse_args(["serve", "--orch-addr", "https://o:8935", "--orch-secret", "s"]))
    with pytest.raises(ConfigError):  # a batch app is served at the engine's root
        settings_from_args(build_parser(env | {"RUNNER_APP": "text-to-image/sd"}).parse_args(["serve"]))
    with pytest.raises(ConfigError):
        settings_from_args(build_parser(env | {"RUNNER_APP": "image-to-nothing/sd"}).parse_args(["serve"]))


def test_batch_app_is_single_shot() -> None:
    env = {"ORCH_ADDR": "https://o:8935", "ORCH_SECRET": "s", "RUNNER_URL": "http://me:8000", "RUNNER_APP": "text-to-image/org/sd"}
    settings = settings_from_args(build_parser(env).parse_args(["serve"]))
    assert (settings.pipeline, settings.model_id) == ("text-to-image", "org/sd")
    config = live_runner_config(settings)
    assert config is not None and config.mode == "single-shot" and not config.static
    assert config.heartbeat_body(runner_id="", status="ready", session_ids=[], gpu=None)["mode"] == "single-shot"


def test_static_runner_flags() -> None:
    """`--app` without `--orch-addr`: a static entry (no orchestrator, no secret needed)."""
    args = build_parser({}).parse_args(["serve", "--port", "8123", "--host", "127.0.0.1", "--app", "live-video-to-video/noop"])
    settings = settings_from_args(args)
    config = live_runner_config(settings)
    assert config is not None and config.static and config.mode == "persistent"
    assert config.runner_url == "http://127.0.0.1:8123" and config.health_url == "http://127.0.0.1:8123/live-runner/health"
    assert settings.pipeline == "live-video-to-video" and settings.model_id == "noop"
    assert live_runner_config(settings_from_args(build_parser({}).parse_args(["serve"]))) is None


def test_static_entry() -> None:
    entry = _config(label="gpu0").static_entry()
    assert entry["health_url"] == "http://me:8000/live-runner/health" and entry["healthy_status_code"] == 200
    assert entry["label"] == "gpu0" and entry["runner_url"] == "http://me:8000"
    prefixed = _config(runner_url="http://me:8000/r/").static_entry()
    assert prefixed["health_url"] == "http://me:8000/r/live-runner/health"


async def test_unreachable_orchestrator_backs_off_without_crashing() -> None:
    port = free_port()  # nothing listens there
    config = _config(orch_addr=f"http://127.0.0.1:{port}", backoff_initial=0.02, backoff_max=0.08)
    async with aiohttp.ClientSession() as http:
        sessions = RunnerSessions(lambda: None, http, pipeline="noop", capacity=1)  # type: ignore[arg-type,return-value]
        registration = Registration(config, http, sessions, status=lambda: "ready")
        task = asyncio.create_task(registration.run())
        await asyncio.sleep(0.4)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert 3 <= registration.failures <= 12  # 20, 40, 80, 80 ms ...: exponential, capped
    assert registration.last_error is not None and registration.last_error.startswith("unreachable")


async def test_serve_process_registers_and_unregisters_on_sigterm(standin: StandinOrchestrator) -> None:
    """`livestream serve --orch-addr ...` as a process: ready at the orchestrator, then SIGTERM
    mid-session unregisters (204) and the orchestrator releases the session."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "livestream", "serve", "--host", "127.0.0.1", "--port", str(port), "--rtmp-port", "0",
        "--orch-addr", standin.base, "--orch-secret", standin.orch_secret,
        "--runner-url", f"http://127.0.0.1:{port}", "--app", "live-video-to-video/noop", "--capacity", "1",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=os.environ | {"LOG_LEVEL": "WARNING"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not any(r.ready for r in standin.runners.values()):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() - started < 60
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            client = LiveRunnerClient(standin.base, http)
            session = await client.reserve((await client.discovery())[0])
            stream = await session.call("POST", "stream/start", {})
            assert stream["input_url"].startswith(standin.base)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0
    assert standin.unregisters and standin.unregisters[-1][1] == 204
    assert session.session_id in standin.released and not standin.runners
