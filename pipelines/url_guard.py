"""The one guard for URLs a stream client can make the server fetch or push to.

A style image URL (`ip_adapter_style_image_url`), an output URL given through the live API, a
URL inside a WHIP or gateway request: the server connects where a client says, so a client
could reach the server's own loopback services or its private network. Every such URL goes
through `check_url`, and the connection goes to the address the check approved, not to a second
DNS answer (DNS rebinding: a name that answers a public address to the check and a loopback one to
the connect). `guarded_fetch` connects to the checked address itself (the Host header and TLS
still use the name); a push client calls `checked_address` before each connect and connects to
what it returns (the RTMP tcUrl keeps the name):

- schemes: those the caller names (default http and https);
- an allow-list when configured: only hosts on it (exact names, or `.example.com` for a
  domain and its subdomains);
- private, loopback, link-local, shared (CGNAT), multicast, reserved and unspecified
  addresses are refused unless the operator allows them (`allow_private`; tests allow
  loopback by configuration).

Trusted, and not guarded: URLs the operator configured (webhooks, `--rtmp-output`) and the
trickle URLs of a runner-API start request (go-livepeer hands runners loopback and LAN
addresses).

Callers: the style image fetch (`pipelines/live/streamdiffusion_features.py`, `guarded_fetch`) and
a client's `rtmp_output` (`livestream/live/manager.py` checks it when set; `RtmpPushSink(guarded=True)`
checks again and pins the address at each connect).

Configuration: a `UrlPolicy` passed by the caller, else the operator's environment, read on each
check: `LIVESTREAM_URL_ALLOW_PRIVATE` (`1`/`true`: allow private and loopback targets) and
`LIVESTREAM_URL_ALLOW_HOSTS` (comma-separated allow-list). docs/operations.md, "Outbound URLs".
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FetchLimits",
    "Fetched",
    "UrlPolicy",
    "UrlRefusedError",
    "check_url",
    "checked_address",
    "current_policy",
    "guarded_fetch",
]


class UrlRefusedError(ValueError):
    """The URL's scheme, host or address is not allowed by the policy."""


@dataclass(frozen=True)
class UrlPolicy:
    """Attributes:
    allow_private: private, loopback and link-local targets are allowed (default refused).
    allow_hosts: when not empty, the only hosts allowed (`name`, or `.domain` for subdomains).
    """

    allow_private: bool = False
    allow_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> UrlPolicy:
        env = dict(os.environ) if env is None else env
        allow = env.get("LIVESTREAM_URL_ALLOW_PRIVATE", "").strip().lower() in ("1", "true", "yes", "on")
        hosts = tuple(h.strip().lower() for h in env.get("LIVESTREAM_URL_ALLOW_HOSTS", "").split(",") if h.strip())
        return cls(allow_private=allow, allow_hosts=hosts)

    def host_allowed(self, host: str) -> bool:
        if not self.allow_hosts:
            return True
        host = host.lower().rstrip(".")
        return any(host == h or (h.startswith(".") and (host.endswith(h) or host == h[1:])) for h in self.allow_hosts)


def current_policy() -> UrlPolicy:
    """The operator's policy, read from the environment at each check."""
    return UrlPolicy.from_env()


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    shared = isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.IPv4Network("100.64.0.0/10")
    return not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified or shared
    )


Resolver = Callable[[str, int], Sequence[str]]


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(
    url: str,
    *,
    schemes: Sequence[str] = ("http", "https"),
    policy: UrlPolicy | None = None,
    resolve: Resolver = _resolve,
) -> tuple[urllib.parse.SplitResult, str]:
    """`(parsed url, the address to connect to)`; raises `UrlRefusedError` (a `ValueError`)
    naming why. Every address the host resolves to must be allowed (no mixing a public and a
    private answer)."""
    policy = policy or current_policy()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise UrlRefusedError(f"URL scheme {parts.scheme!r} is not allowed (allowed: {', '.join(schemes)})")
    host = parts.hostname
    if not host:
        raise UrlRefusedError("URL has no host")  # the URL itself is not quoted: it may hold a stream key
    if not policy.host_allowed(host):
        raise UrlRefusedError(f"host {host} is not on the allow-list")
    port = parts.port or (443 if parts.scheme.lower() in ("https", "wss", "rtmps") else 80)
    try:
        addresses = [host] if _is_ip(host) else list(resolve(host, port))
    except OSError as exc:
        raise UrlRefusedError(f"host {host} does not resolve: {exc}") from exc
    if not addresses:
        raise UrlRefusedError(f"host {host} does not resolve")
    if not policy.allow_private:
        for address in addresses:
            if not _public(address.split("%")[0]):
                raise UrlRefusedError(
                    f"{host} is a private, loopback or link-local address ({address}): refused "
                    "(an operator can allow such targets: LIVESTREAM_URL_ALLOW_PRIVATE=1)"
                )
    return parts, addresses[0]


async def checked_address(
    url: str,
    *,
    schemes: Sequence[str] = ("http", "https"),
    policy: UrlPolicy | None = None,
    resolve: Resolver = _resolve,
    timeout_s: float = 10.0,
) -> str:
    """`check_url` off the event loop (the resolver blocks), within `timeout_s`: the one address
    the caller must connect to. Raises `UrlRefusedError`, also when the host does not resolve in
    time (the message names the host, never the URL: a stream key is a secret)."""
    try:
        async with asyncio.timeout(timeout_s):
            # On a timeout the resolver's thread finishes on its own (getaddrinfo has its own limit).
            _, address = await asyncio.to_thread(check_url, url, schemes=schemes, policy=policy, resolve=resolve)
    except TimeoutError:
        host = urllib.parse.urlsplit(url).hostname
        raise UrlRefusedError(f"host {host} did not resolve in {timeout_s:g} s") from None
    return address


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 5.0
    max_redirects: int = 3


@dataclass
class Fetched:
    url: str
    status: int
    content_type: str
    body: bytes
    redirects: list[str] = field(default_factory=list)


class FetchError(ValueError):
    """The fetch failed (status, size, time); the message says which."""


class FetchTimeoutError(FetchError, TimeoutError):
    pass


def guarded_fetch(
    url: str,
    *,
    limits: FetchLimits = FetchLimits(),
    policy: UrlPolicy | None = None,
    headers: dict[str, str] | None = None,
    resolve: Resolver = _resolve,
) -> Fetched:
    """GET `url` within `limits` (total time, body bytes, redirects, each redirect checked as
    the first URL), connecting to the address `check_url` allowed. Raises `UrlRefusedError`,
    `FetchTimeoutError` or `FetchError`."""
    deadline = time.monotonic() + limits.timeout_s
    seen: list[str] = []
    current = url
    while True:
        parts, address = check_url(current, policy=policy, resolve=resolve)
        status, reason, ctype, location, body = _get_once(parts, address, deadline, limits.max_bytes, headers or {})
        if status in (301, 302, 303, 307, 308) and location:
            if len(seen) >= limits.max_redirects:
                raise FetchError(f"too many redirects (more than {limits.max_redirects})")
            seen.append(current)
            current = urllib.parse.urljoin(current, location)
            continue
        if not 200 <= status < 300:
            raise FetchError(f"HTTP {status} {reason}")
        return Fetched(current, status, ctype, body, seen)


def _get_once(
    parts: urllib.parse.SplitResult, address: str, deadline: float, max_bytes: int, headers: dict[str, str]
) -> tuple[int, str, str, str | None, bytes]:
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchTimeoutError("timed out")
        return left

    conn: http.client.HTTPConnection
    conn = http.client.HTTPSConnection(host, port, timeout=remaining()) if https else http.client.HTTPConnection(host, port, timeout=remaining())

    def connect_pinned(_addr: tuple[str, int], timeout: float | None = None, source: object = None) -> socket.socket:
        # Connect to the checked address; TLS still verifies the certificate against `host`.
        return socket.create_connection((address, port), timeout=remaining())

    conn._create_connection = connect_pinned  # type: ignore[attr-defined]
    resp: http.client.HTTPResponse | None = None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path, headers={"Host": parts.netloc.rsplit("@", 1)[-1], **headers})
        resp = conn.getresponse()
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"the answer is larger than {max_bytes} bytes ({length})")
        chunks: list[bytes] = []
        total = 0
        if resp.status in (301, 302, 303, 307, 308):
            return resp.status, resp.reason, "", resp.getheader("Location"), b""
        while True:
            if conn.sock is not None:
                conn.sock.settimeout(remaining())
            chunk = resp.read1(min(65536, max_bytes + 1 - total))  # one recv: the deadline holds
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FetchError(f"the answer is larger than {max_bytes} bytes")
            remaining()
        return resp.status, resp.reason, resp.getheader("Content-Type") or "", None, b"".join(chunks)
    except (TimeoutError, socket.timeout) as exc:
        raise FetchTimeoutError("timed out") from exc
    except FetchError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(str(exc) or type(exc).__name__) from exc
    finally:
        if resp is not None:
            resp.close()
        conn.close()
