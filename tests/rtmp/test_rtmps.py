"""RTMPS ingest: Debian's ffmpeg publishes over TLS (a self-signed certificate, `-tls_verify 0`
as OBS's default) into the engine's `--rtmps-port`; the same stream keys apply as over RTMP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rtmp_helpers import FFMPEG, RTMP_TEST_CONFIG, run_ffmpeg
from tls_certs import self_signed_cert

from livestream.app import build_app
from livestream.cli import build_parser, settings_from_args
from livestream.errors import ConfigError
from livestream.live import LIVE_CONFIG_KEY
from livestream.protocols import RTMP_SERVER_KEY, RTMPS_SERVER_KEY
from livestream.rtmp import RtmpServer
from livestream.settings import Settings


def _publish(url: str, frames: int, *options: str) -> list[str]:
    """ffmpeg publishing an x264 test pattern with AAC (as fast as it can) to `url`."""
    return [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "lavfi", "-i", f"testsrc2=size=128x128:rate=30,trim=end_frame={frames}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-shortest",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
        "-threads", "1", "-c:a", "aac", "-ac", "2", *options, "-f", "flv", url,
    ]  # fmt: skip


@pytest.fixture
async def rtmps_engine(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], RtmpServer, RtmpServer]]:
    cert, key = self_signed_cert(tmp_path)
    settings = Settings(
        host="127.0.0.1", rtmp_port=0, rtmps_port=0, tls_cert=cert, tls_key=key, live_pipeline="noop",
        rtmp_idle_timeout=3.0, stream_keys={"s3cret": "cam"},
    )  # fmt: skip
    app = build_app(settings)
    app[LIVE_CONFIG_KEY] = RTMP_TEST_CONFIG
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, app[RTMP_SERVER_KEY], app[RTMPS_SERVER_KEY]
    finally:
        await client.close()


async def _final(client: TestClient[Any, Any], stream: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            resp = await client.get(f"/live/{stream}/status")
            if resp.status == 200 and (status := await resp.json()).get("final"):
                return dict(status)
            await asyncio.sleep(0.05)


async def test_ffmpeg_publishes_over_rtmps_and_frames_come_out(
    rtmps_engine: tuple[TestClient[Any, Any], RtmpServer, RtmpServer],
) -> None:
    client, rtmp, rtmps = rtmps_engine
    assert rtmps.scheme == "rtmps" and rtmps.port != rtmp.port
    url = f"rtmps://127.0.0.1:{rtmps.port}/live/s3cret"
    rc, err = await run_ffmpeg(_publish(url, 60, "-tls_verify", "0"))
    assert rc == 0, err
    status = await _final(client, "cam")  # the key names the stream, as over RTMP
    assert status["error"] is None and status["end_reason"] == "input ended"
    assert status["ingest"]["kind"] == "rtmp" and status["ingest"]["video_codec"] == "h264"
    assert status["frames_in"] == status["frames_out"] == 60
    assert rtmps.accepted == 1 and rtmp.accepted == 0


async def test_rtmps_refuses_a_wrong_key_and_a_plain_rtmp_client(
    rtmps_engine: tuple[TestClient[Any, Any], RtmpServer, RtmpServer],
) -> None:
    client, _, rtmps = rtmps_engine
    wrong = f"rtmps://127.0.0.1:{rtmps.port}/live/guess"
    rc, _ = await run_ffmpeg(_publish(wrong, 30, "-tls_verify", "0"), timeout=30)
    assert rc != 0 and rtmps.rejected == 1
    plain = f"rtmp://127.0.0.1:{rtmps.port}/live/s3cret"  # no TLS on the TLS port
    rc, _ = await run_ffmpeg(_publish(plain, 30, "-rw_timeout", "5000000"), timeout=30)
    assert rc != 0 and rtmps.accepted == 0
    assert (await (await client.get("/live")).json())["sessions"] == []


def test_rtmps_port_follows_the_tls_flags(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]

    def settings(*argv: str) -> Settings:
        return settings_from_args(build_parser({}).parse_args(["serve", *argv]))

    assert settings(*tls).rtmps_port == 1936  # MediaMTX's default
    assert settings(*tls, "--rtmps-port", "2936").rtmps_port == 2936
    assert settings(*tls, "--rtmps-port", "0").rtmps_port is None
    assert settings().rtmps_port is None  # no certificate: no RTMPS
    with pytest.raises(ConfigError, match="--rtmps-port 1937 needs --tls-cert and --tls-key"):
        settings("--rtmps-port", "1937")
    assert settings_from_args(build_parser({"RTMPS_PORT": "2000"}).parse_args(["serve", *tls])).rtmps_port == 2000


async def test_a_client_that_never_starts_tls_is_dropped(
    rtmps_engine: tuple[TestClient[Any, Any], RtmpServer, RtmpServer],
) -> None:
    """The TLS handshake is bounded by the idle timeout (3 s here): a silent socket is closed."""
    _, _, rtmps = rtmps_engine
    reader, writer = await asyncio.open_connection("127.0.0.1", rtmps.port)
    try:
        async with asyncio.timeout(20):
            assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()
