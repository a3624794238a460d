"""No secret in logs, constant-time keys, and the URL guard on what a stream client names.

`test_no_secret_in_the_logs_of_a_full_run` runs `livestream serve` as an operator does (debug
logging, an auth token, a stream key, RTMP ingest), uses every way a secret travels (bearer
headers, `?token=` on WHIP, the RTMP publish name and `?key=`, an `rtmp_output` whose last part is
the push target's key) right and wrong, then greps everything the process wrote.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from rtmp_helpers import RawPublisher

from livestream.rtmp.chunks import ProtocolError

from livestream.app import build_app
from livestream.settings import Settings

TOKEN = "tok-7f3a9c51e2d8"
KEY = "sk-b41e0d9a66c2"
PUSH_KEY = "pk-5c0e8f21d7a3"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    port, rtmp_port = _free_port(), _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "LIVESTREAM_URL_ALLOW_PRIVATE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livestream", "--debug", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--rtmp-port", str(rtmp_port), "--live-pipeline", "noop", "--auth-token", TOKEN, "--stream-key", f"cam={KEY}"],
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
        yield proc, port, rtmp_port, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_no_secret_in_the_logs_of_a_full_run(serve: tuple[subprocess.Popen[bytes], int, int, Path]) -> None:
    proc, port, rtmp_port, log = serve
    base = f"http://127.0.0.1:{port}"
    sdp = {"Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:
        for token in (TOKEN, "wrong-token"):
            async with http.get(f"{base}/live", headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status in (200, 401)
        for url, headers in ((f"{base}/live/cam/whip?token={KEY}", sdp), (f"{base}/live/cam/whip", sdp | {"Authorization": f"Bearer {KEY}"})):
            async with http.post(url, data="v=0\r\nnot an offer\r\n", headers=headers) as resp:
                assert resp.status == 400  # authorized, then the offer is refused
        async with http.post(f"{base}/live/cam", json={"rtmp_output": f"rtmp://127.0.0.1:9/app/{PUSH_KEY}"},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()
    for name in (KEY, f"cam?key={KEY}", "not-the-key"):
        pub = RawPublisher(f"rtmp://127.0.0.1:{rtmp_port}/live/{name}")
        try:
            await pub.publish()
            if pub.proto is not None:
                pub.send("video", 0, b"\x17\x01\x00\x00\x00" + bytes(64))
            await asyncio.sleep(0.5)  # the push to the (closed) output port is tried and logged
        except ProtocolError as exc:  # refused (a wrong key, or `cam` still live): logged, not a failure
            assert name != KEY, exc
        finally:
            await pub.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    text = log.read_text(errors="replace")
    assert "publishing stream cam" in text  # the run did what it should, and logged it
    assert '"POST /live/cam/whip ?…" 400' in text  # the access log, without the query
    for secret in (TOKEN, KEY, PUSH_KEY):
        leaked = [line for line in text.splitlines() if secret in line]
        assert leaked == [], f"{secret!r} in the log: {leaked[:3]}"


# --- the URL guard ------------------------------------------------------------------------------


@pytest.fixture
async def engine(monkeypatch: pytest.MonkeyPatch) -> Any:
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(Settings(host="127.0.0.1", port=0, live_pipeline="noop"))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_rtmp_output_from_the_live_api_goes_through_the_url_guard(engine: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "0")  # production's default

    async def configure(url: str) -> tuple[int, str]:
        resp = await engine.post("/live/cam", json={"rtmp_output": url})
        return resp.status, await resp.text()

    for url in ("rtmp://127.0.0.1/app/k", "rtmp://10.1.2.3/app/k", "rtmp://[::1]/app/k", "rtmp://169.254.169.254/app/k", "rtmp://localhost/app/k"):
        status, text = await configure(url)
        assert status == 400 and "private, loopback or link-local" in text, (url, text)
    # DNS failure for the target: refused with the reason, at once.
    status, text = await configure("rtmp://no-such-host.invalid/app/k")
    assert status == 400 and "does not resolve" in text
    # An allow-list: only the hosts on it.
    monkeypatch.setenv("LIVESTREAM_URL_ALLOW_HOSTS", ".example.com")
    status, text = await configure("rtmp://93.184.215.14/app/k")
    assert status == 400 and "not on the allow-list" in text
    # The operator allows private targets: accepted.
    monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "1")
    monkeypatch.delenv("LIVESTREAM_URL_ALLOW_HOSTS")
    status, text = await configure("rtmp://127.0.0.1/app/k")
    assert status == 200, text


async def test_trickle_urls_of_a_runner_start_request_are_trusted(engine: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """go-livepeer hands a runner loopback and LAN trickle URLs: not guarded."""
    monkeypatch.setenv("LIVESTREAM_URL_ALLOW_PRIVATE", "0")
    resp = await engine.post("/live-video-to-video", json={
        "subscribe_url": "http://127.0.0.1:9/ai/trickle/x", "publish_url": "http://127.0.0.1:9/ai/trickle/x-out",
        "model_id": "noop", "stream_id": "trusted",
    })  # fmt: skip
    assert resp.status == 200, await resp.text()
    await engine.delete("/live/trusted")
