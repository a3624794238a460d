"""WebRTC tests run inside a loopback-only network namespace (see `netns.py`): ICE can reach
only 127.0.0.1, both sides gather loopback host candidates only, and no STUN server is used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from livestream.webrtc.aiortc_patches import install_host_addresses
from livestream.webrtc.ice import IceConfig

from .netns import loopback_namespace, namespace_unavailable

LOOPBACK = IceConfig(hosts=("127.0.0.1",))


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    reason = namespace_unavailable()
    if reason is not None:
        pytest.skip(f"WebRTC tests need a loopback-only network namespace: {reason}")
    with loopback_namespace():
        install_host_addresses(LOOPBACK.local_hosts)
        try:
            yield
        finally:
            install_host_addresses([])
