"""The gateway over three real engine processes (`livestream serve`, tiny random-weight model)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gateway_fleet import FleetFactory, free_port
from livepeer_ai import Livepeer

TOKEN = "runner-token"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return b'"OK"' in resp.read()
    except (urllib.error.URLError, ConnectionError):
        return False


@pytest.fixture(scope="module")
def engines(tiny_t2i_dir: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    env = {**os.environ, "PIPELINE": "text-to-image", "MODEL_ID": str(tiny_t2i_dir), "HF_HUB_OFFLINE": "1",
           "AUTH_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}  # fmt: skip
    procs = []
    for _ in range(3):
        port = free_port()
        cmd = [sys.executable, "-m", "livestream", "serve", "--host", "127.0.0.1", "--port", str(port), "--rtmp-port", "0"]
        procs.append((f"http://127.0.0.1:{port}", subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    try:
        deadline = time.monotonic() + 120
        for url, proc in procs:
            while not _healthy(url):
                assert proc.poll() is None, "engine exited"
                assert time.monotonic() < deadline, "engine not healthy"
                time.sleep(0.2)
        yield procs
    finally:
        for _, proc in procs:
            proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_sdk_through_the_gateway_over_engines_and_a_killed_one(engines: list[tuple[str, subprocess.Popen[bytes]]],
                                                               make_fleet: FleetFactory, tiny_t2i_dir: Path) -> None:  # fmt: skip
    from livestream.gateway import RunnerConfig

    fleet = make_fleet([], random_share=0.0)
    # The runners need their token: configure them as the config file would.
    fleet.gateway.discovery.backends[:] = []
    from livestream.gateway.backends import Backend

    fleet.gateway.discovery.backends.extend(Backend(RunnerConfig(url, token=TOKEN)) for url, _ in engines)
    fleet.refresh()
    assert all(b.state == "up" and b.pinned == ("text-to-image", str(tiny_t2i_dir)) for b in fleet.gateway.discovery.backends)
    sdk = Livepeer(server_url=fleet.url, http_bearer="unused")
    request = {"prompt": "a red square", "model_id": str(tiny_t2i_dir), "width": 64, "height": 64, "num_inference_steps": 2, "seed": 3}
    result = sdk.generate.text_to_image(request=request)
    assert result.image_response is not None and result.image_response.images[0].seed == 3

    def one(_: int) -> bool:
        return sdk.generate.text_to_image(request=request).image_response is not None

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(18)]
        time.sleep(0.5)
        engines[1][1].kill()  # mid-load
        assert all(f.result(timeout=60) for f in futures)
    served = [b.latency.get(("text-to-image", str(tiny_t2i_dir))) for b in fleet.gateway.discovery.backends]
    assert sum(1 for s in served if s is not None and s.samples) >= 2  # the load spread
