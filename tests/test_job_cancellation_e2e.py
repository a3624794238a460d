"""A batch job stops when its client leaves, and SIGTERM ends `livestream serve` mid-job.

The tiny random-weight SD model in a real `livestream serve` process, a job of many steps (the
step limit raised for it): the figures printed here are those of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Many steps of the tiny model at 64x64: minutes of work if nothing stops it.
LONG_JOB = b'{"prompt": "x", "width": 64, "height": 64, "num_inference_steps": 100000}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tiny_t2i_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livestream", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--default-model", f"text-to-image={tiny_t2i_dir}", "--limit", "steps=100000"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _start_job(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST /text-to-image HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(LONG_JOB)}\r\n\r\n"
    sock.sendall(head.encode() + LONG_JOB)
    deadline = time.monotonic() + 60
    while _metric(port, "livestream_model_busy") < 1:  # loaded and running
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    time.sleep(0.5)
    return sock


def test_job_stops_when_client_disconnects(server: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    _, port, log = server
    sock = _start_job(port)
    sock.close()
    left = time.monotonic()
    while _metric(port, "livestream_model_busy") > 0:
        assert time.monotonic() - left < 10, "the job kept running after its client left"
        time.sleep(0.02)
    print(f"client disconnect -> job stopped: {time.monotonic() - left:.2f} s")
    assert "the client disconnected; stopping its job" in log.read_text()


def test_sigterm_ends_the_process_mid_job(server: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    proc, port, _ = server
    sock = _start_job(port)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    print(f"SIGTERM -> exit mid-job: {time.monotonic() - sent:.2f} s")
    assert time.monotonic() - sent < 15
    sock.close()
