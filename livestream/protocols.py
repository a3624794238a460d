"""The stream protocols the engine speaks besides the runner contract, registered in one place.

An ingest protocol is a server that hands each publisher to the session manager as an `Ingest`
(`livestream.ingest`); an output protocol is a `PacketSink` (`livestream.egress`) built from a
URL. Adding one (SRT, say) is its module plus one line here:

- `INGEST_SERVERS`: started with the app, after the live session manager (RTMP and RTMPS
  here; WHIP is served by the WebRTC routes, `livestream.webrtc`).
- `OUTPUT_SINKS`: URL scheme -> sink factory, for `rtmp_output` and `--rtmp-output`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiohttp import web

from .live import LIVE_MANAGER_KEY
from .live.manager import SessionManager, SinkFactory
from .errors import ConfigError
from .rtmp import RtmpServer
from .rtmp.server import server_ssl_context
from .rtmp.push import RtmpPushSink
from .settings import Settings

__all__ = ["INGEST_SERVERS", "OUTPUT_SINKS", "RTMPS_SERVER_KEY", "RTMP_SERVER_KEY", "setup_protocols"]

#: A server for publishers, or None when the settings turn it off.
IngestServerFactory = Callable[[SessionManager, Settings], AbstractAsyncContextManager[Any] | None]

#: The embedded RTMP server, when `settings.rtmp_port` is set (its `port` is the bound one).
RTMP_SERVER_KEY: web.AppKey[RtmpServer] = web.AppKey("rtmp_server")


def _rtmp_server(manager: SessionManager, settings: Settings) -> RtmpServer | None:
    return RtmpServer(manager, settings) if settings.rtmp_port is not None else None


#: The RTMPS listener, when `settings.rtmps_port` is set with a TLS certificate and key.
RTMPS_SERVER_KEY: web.AppKey[RtmpServer] = web.AppKey("rtmps_server")


def _rtmps_server(manager: SessionManager, settings: Settings) -> RtmpServer | None:
    if settings.rtmps_port is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigError("--rtmps-port needs --tls-cert and --tls-key.")
    try:
        context = server_ssl_context(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"Cannot load --tls-cert/--tls-key for RTMPS: {exc}") from None
    return RtmpServer(manager, settings, port=settings.rtmps_port, ssl_context=context)


INGEST_SERVERS: Mapping[web.AppKey[Any], IngestServerFactory] = {RTMP_SERVER_KEY: _rtmp_server, RTMPS_SERVER_KEY: _rtmps_server}
OUTPUT_SINKS: Mapping[str, SinkFactory] = {"rtmp": RtmpPushSink}


def setup_protocols(app: web.Application, settings: Settings) -> None:
    """Start the ingest servers with the app (after `setup_live`, whose manager they feed)."""

    async def servers_ctx(app: web.Application) -> AsyncIterator[None]:
        manager = app[LIVE_MANAGER_KEY]
        started = []
        try:
            for key, factory in INGEST_SERVERS.items():
                server = factory(manager, settings)
                if server is None:
                    continue
                app[key] = await server.__aenter__()
                started.append(server)
            if started:
                manager.direct_pipeline  # noqa: B018  (resolve `auto` and log it at start-up)
            yield
        finally:
            for server in reversed(started):
                await server.__aexit__(None, None, None)

    app.cleanup_ctx.append(servers_ctx)
