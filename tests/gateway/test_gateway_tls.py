"""TLS at the gateway with `livestream serve`'s flags: `--tls-cert`/`--tls-key` serve every route
over HTTPS (a self-signed certificate; the client trusts it by `cafile`), and `--rtmps-port`
takes an RTMPS publish (the ffmpeg binary, `-tls_verify 0` as OBS's default) whose output a
noop runner process makes and a WHEP viewer (aiortc, over HTTPS) receives."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import av
import pytest
from tls_certs import self_signed_cert

from livestream.cli import build_parser
from livestream.errors import ConfigError
from livestream.gateway.cli import config_from_args
from livestream.gateway.live_media import LIVE_MEDIA_KEY
from livestream.webrtc.client import WhepClient
from gateway_live_helpers import first_output, free_port, gateway_config, obs_publish, runner_procs, serving, until

pytestmark = pytest.mark.timeout(120)


async def test_https_and_rtmps_at_the_gateway(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with runner_procs(tmp_path, 1) as runners:
        port = free_port()
        # The runner reaches the gateway's channels over HTTPS too (it does not verify trickle
        # certificates unless told to: --trickle-verify-tls).
        config = gateway_config(runners, port, tls_cert=cert, tls_key=key, rtmps_port=0,
                                live_trickle_url=f"https://127.0.0.1:{port}/ai/trickle/")  # fmt: skip
        async with serving(config, server_ctx) as (gw, app):
            assert gw.startswith("https://")
            media = app[LIVE_MEDIA_KEY]
            assert media.rtmp is None and media.rtmps is not None and media.rtmps.scheme == "rtmps"
            connector = aiohttp.TCPConnector(ssl=client_ctx)
            async with aiohttp.ClientSession(connector=connector) as http:
                async with http.get(f"{gw}/live/cam") as resp:  # the player page, over HTTPS
                    assert resp.status == 200 and "html" in resp.content_type
                async with aiohttp.ClientSession() as untrusting:  # the certificate is checked
                    with pytest.raises(aiohttp.ClientConnectorCertificateError):
                        await untrusting.get(f"{gw}/health")
                publisher = await asyncio.create_subprocess_exec(
                    *obs_publish(f"rtmps://127.0.0.1:{media.rtmps.port}/live/cam", 8, "-tls_verify", "0"), stderr=asyncio.subprocess.PIPE
                )
                try:
                    stream = await first_output(app, "cam", "RTMPS")
                    viewer = await WhepClient.connect(http, f"{gw}/live/cam/whep", codec="H264")
                    try:
                        frame = await asyncio.wait_for(viewer.video.recv(), 15)
                        assert isinstance(frame, av.VideoFrame) and (frame.width, frame.height) == (128, 128)
                    finally:
                        await viewer.close()
                    async with http.get(f"{gw}/live/cam/status") as resp:
                        ingest = (await resp.json())["gateway_status"]["media"]["ingest"]
                    assert ingest["video_codec"] == "h264"
                    rc = await asyncio.wait_for(publisher.wait(), 30)
                    assert rc == 0, (await publisher.stderr.read()).decode() if publisher.stderr else rc
                    await until(lambda: stream.ended is not None, timeout=20, what="stream end")
                    assert stream.ended == "input ended" and media.rtmps.accepted == 1
                finally:
                    if publisher.returncode is None:
                        publisher.kill()
                        await publisher.wait()


def test_tls_flags_as_serve_s(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]

    def config(*argv: str) -> tuple[int | None, Path | None]:
        parsed = config_from_args(build_parser({}).parse_args(["gateway", "--runner", "http://r:1", *argv]), {})
        return parsed.rtmps_port, parsed.tls_cert

    assert config(*tls, "--rtmp-port", "1935") == (1936, cert)  # RTMP on: RTMPS on 1936, as serve
    assert config(*tls) == (None, cert)  # no RTMP ingest: HTTPS only
    assert config(*tls, "--rtmp-port", "1935", "--rtmps-port", "0") == (None, cert)
    assert config(*tls, "--rtmps-port", "2936") == (2936, cert)
    with pytest.raises(ConfigError, match="go together"):
        config("--tls-cert", str(cert))
    with pytest.raises(ConfigError, match="needs --tls-cert"):
        config("--rtmps-port", "2936")
    with pytest.raises(ConfigError, match="does not exist"):
        config("--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key))
