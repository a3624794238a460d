"""TLS for `livestream serve` and `livestream gateway`: one set of checks and contexts for the
`--tls-cert`/`--tls-key` (HTTPS) and `--rtmps-port` (RTMPS ingest) flags both commands take."""

from __future__ import annotations

import ssl
from pathlib import Path

from .errors import ConfigError

__all__ = ["DEFAULT_RTMPS_PORT", "check_tls_files", "https_context", "resolve_rtmps_port"]

#: RTMPS's port when TLS is set and RTMP is on, unless `--rtmps-port` says otherwise.
DEFAULT_RTMPS_PORT = 1936


def check_tls_files(cert: Path | None, key: Path | None) -> None:
    """`--tls-cert` and `--tls-key` go together and name files; raises `ConfigError`."""
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together.")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist.")


def https_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The HTTPS server context (None without a certificate); raises `ConfigError`."""
    if cert is None or key is None:
        return None
    from .rtmp.server import server_ssl_context  # the RTMPS listener's: one context for both

    try:
        return server_ssl_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"Cannot load --tls-cert/--tls-key: {exc}") from None


def resolve_rtmps_port(port: int | None, *, tls: bool, rtmp_on: bool) -> int | None:
    """The RTMPS listener's port from `--rtmps-port`: unset, `DEFAULT_RTMPS_PORT` when TLS is set
    and RTMP is on; 0, off (None); else 1..65535, which needs TLS. Raises `ConfigError`."""
    if port is None:
        return DEFAULT_RTMPS_PORT if tls and rtmp_on else None
    if port == 0:
        return None
    if not 0 < port <= 65535:
        raise ConfigError(f"--rtmps-port must be 1..65535 (or 0 for off), got {port}.")
    if not tls:
        raise ConfigError(f"--rtmps-port {port} needs --tls-cert and --tls-key.")
    return port
