"""`livestream.webrtc.aiortc_patches`: the aiortc and aioice internals it relies on still have the
shape it expects, and a version outside the supported range is refused loudly."""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import aioice
import aioice.ice
import aiortc.rtcrtpreceiver
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from livestream.webrtc import aiortc_patches
from livestream.webrtc.aiortc_patches import (
    SUPPORTED,
    MarkerJitterBuffer,
    UnsupportedVersionError,
    check_versions,
    install_host_addresses,
    install_marker_jitter_buffer,
    route_keyframe_requests,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.fixture
def fresh_check() -> Iterator[None]:
    check_versions.cache_clear()
    yield
    check_versions.cache_clear()


def test_installed_versions_are_supported_and_pinned_alike(fresh_check: None) -> None:
    check_versions()
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {r.name: r.specifier for r in map(Requirement, dependencies)}
    for package, supported in SUPPORTED.items():
        assert pins[package] == SpecifierSet(supported), package


def test_an_unsupported_version_is_refused_by_name(fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc_patches, "version", lambda package: "1.17.0" if package == "aiortc" else "0.13.0")
    with pytest.raises(UnsupportedVersionError, match=r"aiortc 1\.17\.0 is installed.*aiortc>=1\.16,<1\.17"):
        install_marker_jitter_buffer()


# --- the jitter buffer ------------------------------------------------------------------------


def test_receivers_take_their_jitter_buffer_from_the_module_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "JitterBuffer", aiortc.rtcrtpreceiver.JitterBuffer)  # restored after
    install_marker_jitter_buffer()
    transport = SimpleNamespace(state="new")
    video = RTCRtpReceiver("video", transport)  # type: ignore[arg-type]
    audio = RTCRtpReceiver("audio", transport)  # type: ignore[arg-type]
    assert type(video._RTCRtpReceiver__jitter_buffer) is MarkerJitterBuffer  # type: ignore[attr-defined]
    assert type(audio._RTCRtpReceiver__jitter_buffer) is JitterBuffer  # type: ignore[attr-defined]


def test_jitter_buffer_internals_have_the_expected_shape() -> None:
    assert list(inspect.signature(JitterBuffer.__init__).parameters) == ["self", "capacity", "prefetch", "is_video"]
    jb = JitterBuffer(capacity=16, is_video=True)
    assert (jb._capacity, jb.capacity, jb._is_video, jb._origin) == (16, 16, True, None)
    assert jb._packets == [None] * 16
    assert list(inspect.signature(JitterBuffer.remove).parameters) == ["self", "count"]
    frame = JitterFrame(data=b"x", timestamp=1)
    assert (frame.data, frame.timestamp) == (b"x", 1)
    # The receiver depayloads each packet into `_data` before the buffer joins them.
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert source.index("packet._data = depayload(") < source.index("self.__jitter_buffer.add(packet)")


# --- keyframe requests ------------------------------------------------------------------------


async def test_a_pli_reaches_the_routed_keyframe_request() -> None:
    assert list(inspect.signature(RTCRtpSender._send_keyframe).parameters) == ["self"]
    sender = RTCRtpSender("video", SimpleNamespace(state="new"))  # type: ignore[arg-type]
    requests: list[None] = []
    route_keyframe_requests(sender, lambda: requests.append(None))
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc)
    await sender._handle_rtcp_packet(pli)
    assert len(requests) == 1


# --- host candidates --------------------------------------------------------------------------


async def test_aioice_gathers_on_the_installed_host_addresses() -> None:
    assert list(inspect.signature(aioice.ice.get_host_addresses).parameters) == ["use_ipv4", "use_ipv6"]
    install_host_addresses(["127.0.0.1"])  # aioice itself never offers 127.0.0.1
    try:
        connection = aioice.Connection(ice_controlling=True)
        await connection.gather_candidates()
        try:
            assert {c.host for c in connection.local_candidates} == {"127.0.0.1"}
        finally:
            await connection.close()
    finally:
        install_host_addresses([])
    assert aioice.ice.get_host_addresses is aiortc_patches._aioice_get_host_addresses
