"""Bearer keys on the gateway's routes (off unless keys are configured), compared in constant time.

Open without a key: `/health`, `/openapi.json`, stored media (`/stream/...`, whose ids are
random and unguessable, so a browser can fetch a video URL as it is), the live channels, and live
playback (the player page `GET /live/{stream}`, the view page `GET /live/{stream}/view`, their
scripts, WHEP). WHIP and the live routes need a key.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import hdrs, web

from ..api.errors import json_error

__all__ = ["auth_middleware", "key_matches"]

_OPEN_PATHS = frozenset({"/health", "/openapi.json"})
#: `/ai/trickle/`: the live channels (runner-facing ones have random names, as an orchestrator's);
#: `/webrtc/`: the player page's script.
_OPEN_PREFIXES = ("/stream/", "/ai/trickle/", "/webrtc/")
#: Playback is public, as the engine's without `--protect-playback`: the player page, the OBS
#: view page (`/view`: OBS's Browser Source sends no key) and WHEP (`POST /live/{stream}/whep`,
#: its resource's PATCH and DELETE by their unguessable URL).
_OPEN_PLAYBACK = re.compile(r"^/live/[^/]+(/view|/whep(/[^/]+)?)?$")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Middleware = Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]


def key_matches(given: str, keys: Sequence[str]) -> bool:
    """Compare against every key, each in constant time, without stopping at a match."""
    given_b = given.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given_b, key.encode())
    return found


def auth_middleware(keys: Sequence[str]) -> _Middleware:
    keys = tuple(keys)

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if (request.path in _OPEN_PATHS or request.path.startswith(_OPEN_PREFIXES) or request.method == "OPTIONS"
                or (_OPEN_PLAYBACK.match(request.path) and not (request.method == "POST" and request.path.count("/") == 2))):
            return await handler(request)
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() != "bearer" or not token or not key_matches(token.strip(), keys):
            return json_error(401, "Invalid bearer token.", {hdrs.WWW_AUTHENTICATE: "Bearer"})
        return await handler(request)

    return middleware
