"""`--trickle-verify-tls`: live sessions check the certificates of trickle URLs only when asked.

The default (no check) is what go-livepeer needs, since orchestrators serve trickle over HTTPS with
self-signed certificates; tests/test_orchestrator_contract.py runs a whole stream that way.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from live_helpers import wait_for

from livestream.settings import Settings
from trickle.server import TrickleServer, TrickleServerConfig


async def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await openssl.wait() == 0
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_verify_tls_refuses_a_self_signed_orchestrator(
    aiohttp_server: Any, engine_factory: Any, tmp_path: Path
) -> None:
    orchestrator = web.Application()
    TrickleServer(TrickleServerConfig(autocreate=True)).setup(orchestrator)
    server = await aiohttp_server(orchestrator, ssl=await _self_signed(tmp_path))
    base = str(server.make_url("/")).rstrip("/")

    engine = await engine_factory(Settings(host="127.0.0.1", port=0, trickle_verify_tls=True))
    resp = await engine.post(
        "/live-video-to-video",
        json={"subscribe_url": f"{base}/s", "publish_url": f"{base}/s-out", "model_id": "noop", "stream_id": "tls"},
    )
    assert resp.status == 200

    async def ended_with_tls_error() -> bool:
        status = await (await engine.get("/live/tls/status")).json()
        return "certificate" in str(status.get("error", "")).lower() or "tls" in str(status.get("error", "")).lower()

    await wait_for(ended_with_tls_error, timeout=20)
