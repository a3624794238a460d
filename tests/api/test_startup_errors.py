"""Start-up errors a person understands: `livestream serve` run as a user runs it (a subprocess),
each mistake answered by one line on stderr saying what is wrong and what to do, a non-zero exit
and no traceback (unless --debug); and, when all is well, the URLs a newcomer needs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "DEBUG", "PORT", "RTMP_PORT", "LIVE_PARAMS", "LIVE_PIPELINE")}
ENV["CUDA_VISIBLE_DEVICES"] = ""  # the ready banner below is the CPU one on any machine


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "livestream", *args]


def _free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return int(free.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[list[str], subprocess.CompletedProcess[str]]]]:
    """Every mistake below, each its own `livestream` process, run side by side (each spends
    seconds importing): name -> (what it was given, how it ended)."""
    not_a_model = tmp_path_factory.mktemp("not-a-model")
    (not_a_model / "notes.txt").write_text("not a model")
    with socket.socket() as taken, socket.socket() as refusing:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refusing.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        busy, closed = taken.getsockname()[1], refusing.getsockname()[1]
        serve = ("serve", "--host", "127.0.0.1")
        cases = {
            "http port": [*serve, "--port", str(busy), "--rtmp-port", "0"],
            "rtmp port": [*serve, "--port", str(_free_port()), "--rtmp-port", str(busy)],
            "model folder": [*serve, "--pipeline", "text-to-image", "--model-id", str(not_a_model)],
            "live model folder": [
                *serve, "--rtmp-port", "0", "--live-pipeline", "streamdiffusion",
                "--live-params", json.dumps({"model_id": str(not_a_model)}),
            ],  # fmt: skip
            "live params json": [*serve, "--live-params", "{prompt: fox}"],
            "live params value": [*serve, "--live-pipeline", "color-filter", "--live-params", '{"saturation": 9}'],
            "live params auto": [*serve, "--live-params", '{"prompt": "a fox"}'],  # auto is color-filter (ENV)
            "webhook": [*serve, "--rtmp-auth-webhook", f"http://127.0.0.1:{closed}/auth"],
            "debug": ["--debug", "serve", "--live-params", "[1"],
        }
        commands = {name: _command(*args) for name, args in cases.items()}
        # A benchmark that needs Chromium, on a PATH without it.
        cases["no chromium"] = ["glass_to_glass", "--browser"]
        commands["no chromium"] = [sys.executable, "-m", "benchmarks", *cases["no chromium"]]
        envs = {name: ENV for name in cases} | {"no chromium": ENV | {"PATH": str(not_a_model)}}
        procs = {
            name: subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envs[name], cwd=ROOT
            )
            for name, command in commands.items()
        }
        done = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            done[name] = (cases[name], subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    yield done


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line; nothing but log lines before it, and no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("livestream: error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().endswith(errors[0])
    return errors[0]


def test_a_taken_http_port_names_the_port_and_the_flag(runs) -> None:
    args, result = runs["http port"]
    line = _one_line(result)
    port = args[args.index("--port") + 1]
    assert result.returncode == 1
    assert "error" in line and "in use" in line and f"port {port} " in line and "--port" in line


def test_a_taken_rtmp_port_names_the_port_and_the_flag(runs) -> None:
    args, result = runs["rtmp port"]
    line = _one_line(result)
    assert "in use" in line and f"port {args[args.index('--rtmp-port') + 1]} " in line and "--rtmp-port" in line


def test_a_folder_that_is_not_a_model(runs) -> None:
    args, result = runs["model folder"]
    line = _one_line(result)
    assert result.returncode == 2
    assert "not a model folder" in line and args[-1] in line
    line = _one_line(runs["live model folder"][1])
    assert line.startswith("livestream: error: --live-params model_id: ") and "not a model folder" in line


def test_bad_live_params(runs) -> None:
    assert "--live-params is not valid JSON" in _one_line(runs["live params json"][1])
    line = _one_line(runs["live params value"][1])
    assert "--live-params: saturation" in line and "color-filter" in line
    # Diffusion's params where auto runs color-filter (no CUDA GPU): said at start-up, not at
    # every publish.
    line = _one_line(runs["live params auto"][1])
    assert "--live-params: prompt" in line and "--live-pipeline auto runs without a CUDA GPU" in line


def test_a_webhook_that_refuses_connections(runs) -> None:
    line = _one_line(runs["webhook"][1])
    assert "webhook" in line and "refuses connections" in line and "--rtmp-auth-webhook" in line


def test_a_benchmark_without_chromium(runs) -> None:
    result = runs["no chromium"][1]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "glass_to_glass: error: --browser needs Chromium, which is not installed: apt install chromium "
        "(or make system-packages), or run without --browser."
    ]


def test_debug_adds_the_traceback(runs) -> None:
    result = runs["debug"][1]
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("livestream: error: --live-params is not valid JSON")


def test_serve_says_what_it_runs_and_where_to_push_watch_and_view() -> None:
    ports = [_free_port(), _free_port()]
    proc = subprocess.Popen(
        _command("serve", "--host", "127.0.0.1", "--port", str(ports[0]), "--rtmp-port", str(ports[1])),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "OBS view:" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    text = "\n".join(lines)
    assert f"push:      rtmp://127.0.0.1:{ports[1]}/live/mystream" in text, text
    assert f"watch:     http://127.0.0.1:{ports[0]}/live/mystream" in text
    assert f"OBS view:  http://127.0.0.1:{ports[0]}/live/mystream/view" in text
    assert "color-filter on the CPU (no CUDA GPU: using color-filter; pass --live-pipeline streamdiffusion" in text
