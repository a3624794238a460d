"""ICE configuration: which servers aiortc may use and which addresses it offers.

- `--ice-server URL` (repeatable): `stun:host:port`, `turn:host:port?transport=udp` with
  `--ice-username`/`--ice-credential`, or `turn:user:pass@host:port`. None by default: aiortc
  with `iceServers=None` would quietly use Google's public STUN server, and an unreachable
  STUN server holds every answer for 5 s.
- `--webrtc-host ADDR` (repeatable): the addresses offered as host candidates. An address of
  a local interface (e.g. `127.0.0.1`, which aioice skips on its own) is gathered on directly;
  any other address (the public IP of a 1:1 NAT) is written into the answer in place of the
  gathered host candidates' addresses, so the peer sends to it and the NAT forwards.

Gathering on chosen addresses patches aioice (`aiortc_patches.install_host_addresses()`, for the
whole process: one engine per process).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiortc import RTCConfiguration, RTCIceServer

from ..errors import ConfigError

__all__ = ["IceConfig", "parse_ice_server", "rewrite_host_candidates"]

log = logging.getLogger(__name__)


def parse_ice_server(url: str, username: str | None = None, credential: str | None = None) -> RTCIceServer:
    """`stun:`/`turn:`/`turns:` URL, optionally with `user:pass@` before the host."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise ConfigError(f"--ice-server expects stun:HOST[:PORT] or turn:[USER:PASS@]HOST[:PORT], got {url!r}.")
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, _, password = userinfo.partition(":")
        username, credential = unquote(user), unquote(password)
        url = f"{scheme}:{rest}"
    if scheme.startswith("turn") and (not username or not credential):
        raise ConfigError(f"TURN server {url!r} needs a username and a credential.")
    return RTCIceServer(urls=url, username=username, credential=credential)


def _is_local(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class IceConfig:
    """The engine's ICE settings (from `--ice-server`, `--webrtc-host`)."""

    servers: tuple[RTCIceServer, ...] = ()
    hosts: tuple[str, ...] = ()
    #: Hosts that are local interface addresses (gathered on) and the others (advertised).
    local_hosts: tuple[str, ...] = field(init=False, default=())
    advertised_hosts: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        local = tuple(h for h in self.hosts if _is_local(h))
        object.__setattr__(self, "local_hosts", local)
        object.__setattr__(self, "advertised_hosts", tuple(h for h in self.hosts if h not in local))

    def rtc_configuration(self) -> RTCConfiguration:
        # Always a list: None would mean aiortc's default public STUN server.
        return RTCConfiguration(iceServers=list(self.servers))


def rewrite_host_candidates(sdp: str, advertised: tuple[str, ...]) -> str:
    """Replace the address of every host candidate with the advertised address (1:1 NAT).

    Each gathered host candidate is repeated once per advertised address, with the same port.
    """
    if not advertised:
        return sdp
    out: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and " typ host" in line:
            parts = line.split(" ")
            for i, address in enumerate(advertised):
                copy = list(parts)
                copy[4] = address
                if i:
                    copy[0] = f"{parts[0]}{i}"
                out.append(" ".join(copy))
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"
