"""Every place the WebRTC code reaches into aiortc's and aioice's internals.

Neither library offers a public way to do these (checked against aiortc 1.16 and aioice 0.13):

- `install_marker_jitter_buffer()`: aiortc's receivers use `MarkerJitterBuffer` for video, by
  replacing the `JitterBuffer` name in `aiortc.rtcrtpreceiver` (process-wide).
- `route_keyframe_requests()`: a sender's PLI/FIR handler, the private
  `RTCRtpSender._send_keyframe()`, calls ours instead.
- `install_host_addresses()`: aioice gathers host candidates on the given addresses, by
  replacing its module-level `aioice.ice.get_host_addresses()` (process-wide; aioice's
  `Connection` takes no interface option and aiortc passes none).

Each relies on private names and behaviour, so `check_versions()` refuses any aiortc or aioice
outside `SUPPORTED` (the range pyproject.toml pins), before anything is patched;
tests/webrtc/test_patches.py fails when one of the internals changes shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from importlib.metadata import version

import aioice.ice
import aiortc.rtcrtpreceiver
from aiortc import RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from packaging.specifiers import SpecifierSet

from ..errors import LivestreamError

__all__ = [
    "SUPPORTED",
    "MarkerJitterBuffer",
    "UnsupportedVersionError",
    "check_versions",
    "install_host_addresses",
    "install_marker_jitter_buffer",
    "route_keyframe_requests",
]

#: The versions these patches were written for and tested with: the same as pyproject.toml's pins.
SUPPORTED = {"aiortc": ">=1.16,<1.17", "aioice": ">=0.13,<0.14"}


class UnsupportedVersionError(LivestreamError, RuntimeError):
    """An installed aiortc or aioice is outside the range these patches support."""


@functools.cache
def check_versions() -> None:
    """Raise `UnsupportedVersionError` unless every patched package is in `SUPPORTED`."""
    for package, supported in SUPPORTED.items():
        found = version(package)
        if not SpecifierSet(supported).contains(found, prereleases=True):
            raise UnsupportedVersionError(
                f"{package} {found} is installed, but {__name__} patches its internals and supports "
                f"{package}{supported} only: install a supported version, or check the patches "
                f"against {package} {found} and widen the range (with pyproject.toml's pin)."
            )


# --- the jitter buffer ------------------------------------------------------------------------


class MarkerJitterBuffer(JitterBuffer):
    """A video jitter buffer that hands a frame on as soon as its last packet (RTP marker) is in.

    aiortc's `JitterBuffer` releases a frame only when the first packet of the *next* frame
    arrives, so every aiortc receiver adds one frame interval (33 ms at 30 fps) to the path: the
    engine's WHIP ingest, and an aiortc WHEP client. Browsers release on the marker bit. This
    subclass does too when every packet of the frame, from the buffer's origin to the marked
    one, is present; otherwise (loss, reordering) it falls back to aiortc's rule.

    Limit: `add()` returns at most one frame, so once a gap has made frames queue up, each later
    frame again leaves with the next frame's first packet (aiortc's latency, never worse) until
    the connection ends.

    Reads aiortc's private `_is_video`, `_origin`, `_packets`, `_capacity` and the depayloaded
    `RtpPacket._data` the receiver sets.
    """

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is not None or not self._is_video or not packet.marker or self._origin is None:
            return pli_flag, frame
        packets: list[RtpPacket] = []
        timestamp = None
        for count in range(self.capacity):
            candidate = self._packets[(self._origin + count) % self._capacity]
            if candidate is None:
                return pli_flag, None  # a gap: wait, as aiortc does
            if timestamp is None:
                timestamp = candidate.timestamp
            elif candidate.timestamp != timestamp:
                return pli_flag, None  # an older frame is still incomplete
            packets.append(candidate)
            if candidate is packet:
                break
        else:
            return pli_flag, None
        self.remove(len(packets))
        return pli_flag, JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)  # type: ignore[attr-defined]


def _jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
    """Stands in for `JitterBuffer` in aiortc's receiver module: video gets the marker rule."""
    if is_video:
        return MarkerJitterBuffer(capacity=capacity, prefetch=prefetch, is_video=True)
    return JitterBuffer(capacity=capacity, prefetch=prefetch, is_video=is_video)


def install_marker_jitter_buffer() -> None:
    """Make every aiortc receiver created from now on use `MarkerJitterBuffer` for video."""
    check_versions()
    aiortc.rtcrtpreceiver.JitterBuffer = _jitter_buffer  # type: ignore[attr-defined,assignment]


# --- keyframe requests ------------------------------------------------------------------------


def route_keyframe_requests(sender: RTCRtpSender, request_keyframe: Callable[[], None]) -> None:
    """Call `request_keyframe()` when the sender's peer sends a PLI or FIR.

    aiortc handles both with `_send_keyframe()`, which only sets a flag its own encoder reads:
    a track that returns already encoded packets bypasses that encoder.
    """
    check_versions()
    sender._send_keyframe = request_keyframe  # type: ignore[method-assign]


# --- host candidates --------------------------------------------------------------------------

_aioice_get_host_addresses = aioice.ice.get_host_addresses


def install_host_addresses(hosts: Sequence[str]) -> None:
    """Make aioice gather host candidates on `hosts` only (empty: its own choice again).

    An address with a `:` is IPv6 and is offered only when the connection uses IPv6.
    """
    check_versions()
    if not hosts:
        aioice.ice.get_host_addresses = _aioice_get_host_addresses
        return
    chosen = list(hosts)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [h for h in chosen if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
