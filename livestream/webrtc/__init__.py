"""WebRTC for people: WHEP playback, WHIP ingest, the player and camera pages (RFC 9725).

- `tracks.py`: the shared H.264 encode fanned out to viewers (PLI and late-joiner keyframes).
- `peers.py`: WHIP/WHEP resources on aiortc peer connections (`WebRTCHub`).
- `engine.py`: the hub wired to live sessions (WHEP as a session sink, WHIP as an ingest).
- `routes.py`: the HTTP resources and pages; `ice.py`: ICE servers and host addresses;
  `sdp.py`: offer checks and trickle fragments; `client.py`: small aiortc WHIP/WHEP clients.
- `aiortc_patches.py`: everything that reaches into aiortc's and aioice's internals, with the
  versions it supports (checked when the app is set up).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..settings import Settings
from .aiortc_patches import check_versions, install_host_addresses, install_marker_jitter_buffer
from .ice import IceConfig, parse_ice_server
from .peers import Playback, Publisher, StreamDirectory, StreamNotFound, WebRTCHub
from .routes import WEBRTC_HUB_KEY, add_webrtc_routes
from .tracks import AudioFanout, PacketFanout

__all__ = [
    "WEBRTC_DIRECTORY_KEY",
    "WEBRTC_HUB_KEY",
    "AudioFanout",
    "IceConfig",
    "PacketFanout",
    "Playback",
    "Publisher",
    "StreamDirectory",
    "StreamNotFound",
    "WebRTCHub",
    "ice_config",
    "setup_webrtc",
]

#: Optional: set before the app starts to serve streams from elsewhere (tests).
WEBRTC_DIRECTORY_KEY: web.AppKey[StreamDirectory] = web.AppKey("webrtc_directory")


def ice_config(settings: Settings) -> IceConfig:
    servers = tuple(
        parse_ice_server(url, settings.ice_username, settings.ice_credential) for url in settings.ice_servers
    )
    return IceConfig(servers=servers, hosts=tuple(settings.webrtc_hosts))


def setup_webrtc(app: web.Application, settings: Settings) -> None:
    """Add the WHIP/WHEP resources and pages and the hub's lifetime to `app` (after `setup_live`).

    Raises `UnsupportedVersionError` if aiortc or aioice is a version its patches do not support.
    """
    check_versions()
    add_webrtc_routes(app)
    ice = ice_config(settings)

    async def webrtc_ctx(app: web.Application) -> AsyncIterator[None]:
        install_host_addresses(ice.local_hosts)
        install_marker_jitter_buffer()
        directory = app.get(WEBRTC_DIRECTORY_KEY)
        if directory is None:
            from .engine import SessionDirectory

            directory = SessionDirectory(app)
        hub = WebRTCHub(directory, ice)
        if hasattr(directory, "hub"):
            directory.hub = hub  # to end a stream's viewers when it ends
        app[WEBRTC_HUB_KEY] = hub
        try:
            yield
        finally:
            await hub.close()

    app.cleanup_ctx.append(webrtc_ctx)
