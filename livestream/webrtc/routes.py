"""HTTP side of WebRTC: WHEP/WHIP resources (RFC 9725) and the player and camera pages.

    GET    /live/{stream}                     player page (WHEP, status, param controls)
    GET    /live/{stream}/publish             camera page (WHIP publish + processed playback)
    GET    /live/{stream}/view                OBS Browser Source page: video only, reconnects, low latency
    GET    /webrtc/{name}.js                  the pages' scripts (webrtc.js, controls.js)
    OPTIONS /live/{stream}/{whep|whip}        204 + the engine's ICE servers as `Link` headers
    POST   /live/{stream}/whep                SDP offer → 201 + answer + Location
    POST   /live/{stream}/whip                SDP offer → 201 + answer + Location
    PATCH  /live/{stream}/{whep|whip}/{id}    trickle ICE (application/trickle-ice-sdpfrag) → 204
    DELETE /live/{stream}/{whep|whip}/{id}    close → 200

Auth (with `--auth-token`): WHIP needs `Authorization: Bearer TOKEN` (or `?token=` as a stream
key); WHEP and the player are public unless `--protect-playback`. A resource's PATCH and DELETE
are authorized by its unguessable URL, as RFC 9725 allows.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from importlib import resources as importlib_resources

from aiohttp import hdrs, web

from pipelines.errors import InvalidRequestError

from ..api.errors import ApiError
from ..errors import SessionLimitError, StreamBusyError
from ..keys import SETTINGS_KEY
from ..live.client_limits import CLIENT_SESSIONS_KEY
from ..live.direct import valid_stream_name
from .peers import Resource, StreamNotFound, WebRTCHub
from .sdp import OfferError, parse_sdpfrag

__all__ = ["WEBRTC_HUB_KEY", "add_webrtc_routes"]

WEBRTC_HUB_KEY = web.AppKey("webrtc_hub", WebRTCHub)

routes = web.RouteTableDef()

_SDP = "application/sdp"
_SDPFRAG = "application/trickle-ice-sdpfrag"
_PAGES = {"player": "player.html", "publish": "publish.html", "view": "view.html"}
_SCRIPTS = {"webrtc": "webrtc.js", "controls": "controls.js"}


def _check_token(request: web.Request, *, required: bool) -> None:
    token = request.app[SETTINGS_KEY].auth_token
    if not token or not required:
        return
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    given = credentials if scheme.lower() == "bearer" else request.query.get("token", "")
    if not given or not secrets.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "Invalid bearer token.", {hdrs.WWW_AUTHENTICATE: "Bearer"})


def _protect_playback(request: web.Request) -> bool:
    return bool(getattr(request.app[SETTINGS_KEY], "protect_playback", False))


def _check_publish(request: web.Request, stream: str) -> None:
    """WHIP: the engine's token, or a stream key of this stream (`Bearer KEY` or `?token=KEY`)."""
    settings = request.app[SETTINGS_KEY]
    token = settings.auth_token
    keys = getattr(settings, "stream_keys", None) or {}
    if not token and not keys:
        return
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    given = credentials if scheme.lower() == "bearer" else request.query.get("token", "")
    if given:
        if token and secrets.compare_digest(given.encode(), token.encode()):
            return
        # Every key compared in constant time, none skipped at a match (no dict lookup on a secret).
        matched = False
        for key, name in keys.items():
            matched |= secrets.compare_digest(given.encode(), key.encode()) and name == stream
        if matched:
            return
    raise ApiError(401, "Publishing needs the engine's token or this stream's key as a bearer token.", {hdrs.WWW_AUTHENTICATE: "Bearer"})


async def _offer(request: web.Request) -> str:
    ctype = request.content_type
    if ctype != _SDP:
        raise ApiError(415, f"An SDP offer must be sent as {_SDP}, not {ctype or 'no content type'}.")
    body = await _bounded_text(request, "SDP offer")
    if not body.strip():
        raise ApiError(400, "The body is empty: send an SDP offer.")
    return body


async def _bounded_text(request: web.Request, what: str) -> str:
    """The body as text, refused with 413 past `--limit sdp_bytes` (read no further than that)."""
    limit = request.app[SETTINGS_KEY].stream_limits.sdp_bytes
    too_big = ApiError(413, f"The {what} is over this server's limit of {limit} bytes (--limit sdp_bytes=N).")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    data = bytearray()
    while chunk := await request.content.read(65536):
        data += chunk
        if len(data) > limit:
            raise too_big
    return data.decode(request.charset or "utf-8", "replace")


def _created(resource: Resource, answer: str, request: web.Request) -> web.Response:
    hub = request.app[WEBRTC_HUB_KEY]
    headers = {
        # Relative to the POSTed URL (`…/whep` + `whep/{id}`), so a proxy in front (go-livepeer's
        # live-runner proxy, a gateway) keeps the PATCH and DELETE on its own path.
        hdrs.LOCATION: f"{resource.kind}/{resource.id}",
        hdrs.ETAG: resource.etag,
        "Accept-Patch": _SDPFRAG,
        hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: "Location, ETag, Link, Accept-Patch",
    }
    links = _ice_links(hub)
    if links:
        headers[hdrs.LINK] = ", ".join(links)
    return web.Response(status=201, text=answer, content_type=_SDP, headers=headers)


def _ice_links(hub: WebRTCHub) -> list[str]:
    """The engine's ICE servers as RFC 9725 `Link: <url>; rel="ice-server"` values."""
    links = []
    for server in hub.ice.servers:
        urls = [server.urls] if isinstance(server.urls, str) else server.urls
        for url in urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username:
                link += f'; username="{server.username}"; credential="{server.credential}"; credential-type="password"'
            links.append(link)
    return links


@routes.options("/live/{stream}/{kind:whep|whip}")
async def ice_servers(request: web.Request) -> web.Response:
    """What the pages ask before their offer: the ICE servers (the 201 repeats them), after the
    same auth as the POST, since TURN credentials are in them."""
    if request.match_info["kind"] == "whip":
        _check_publish(request, request.match_info["stream"])
    else:
        _check_token(request, required=_protect_playback(request))
    links = _ice_links(request.app[WEBRTC_HUB_KEY])
    headers = {"Accept-Post": _SDP, hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: "Link, Accept-Post"}
    if links:
        headers[hdrs.LINK] = ", ".join(links)
    return web.Response(status=204, headers=headers)


@routes.post("/live/{stream}/whep")
async def whep_post(request: web.Request) -> web.Response:
    _check_token(request, required=_protect_playback(request))
    stream = request.match_info["stream"]
    offer = await _offer(request)
    hub = request.app[WEBRTC_HUB_KEY]
    viewers = request.app[SETTINGS_KEY].stream_limits.whep_viewers
    if sum(1 for r in hub.resources(stream) if r.kind == "whep") >= viewers:
        raise ApiError(503, f"The stream {stream!r} has {viewers} viewers, this server's limit (--limit whep_viewers=N).")
    with _offer_errors(stream):
        resource, answer = await hub.play(stream, offer)
    return _created(resource, answer, request)


@contextlib.contextmanager
def _offer_errors(stream: str) -> Iterator[None]:
    """Why an offer was not taken, as HTTP: the one place WHIP/WHEP errors get a status."""
    try:
        yield
    except (OfferError, InvalidRequestError) as exc:
        raise ApiError(400, str(exc)) from None
    except StreamNotFound as exc:
        raise ApiError(404, str(exc) or f"No live stream {stream!r}.") from None
    except StreamBusyError as exc:
        raise ApiError(409, str(exc)) from None
    except SessionLimitError as exc:
        raise ApiError(503, str(exc)) from None


@routes.post("/live/{stream}/whip")
async def whip_post(request: web.Request) -> web.Response:
    stream = request.match_info["stream"]
    if not valid_stream_name(stream):
        raise ApiError(400, f"Invalid stream name {stream!r}: use letters, digits, '_', '-' and '.' (at most 128).")
    _check_publish(request, stream)
    offer = await _offer(request)
    hub = request.app[WEBRTC_HUB_KEY]
    clients = request.app.get(CLIENT_SESSIONS_KEY)
    with _offer_errors(stream):
        if clients is not None:
            clients.check("whip", request.remote or "", lambda s: any(r.kind == "whip" for r in hub.resources(s)))
        resource, answer = await hub.publish(stream, offer)
    if clients is not None:
        clients.add("whip", request.remote or "", stream)
    return _created(resource, answer, request)


def _resource(request: web.Request) -> Resource:
    kind = request.match_info["kind"]
    if kind not in ("whep", "whip"):
        raise ApiError(404, f"Unknown resource kind {kind!r}.")
    resource = request.app[WEBRTC_HUB_KEY].get(request.match_info["stream"], kind, request.match_info["id"])
    if resource is None:
        raise ApiError(404, "No such WHIP/WHEP session (it was deleted or has ended).")
    return resource


@routes.patch("/live/{stream}/{kind}/{id}")
async def resource_patch(request: web.Request) -> web.Response:
    resource = _resource(request)
    if request.content_type != _SDPFRAG:
        raise ApiError(415, f"Trickle ICE must be sent as {_SDPFRAG}.", {"Accept-Patch": _SDPFRAG})
    match = request.headers.get(hdrs.IF_MATCH)
    if match is not None and match != "*" and match != resource.etag:
        raise ApiError(412, "If-Match does not match this session's ETag.")
    try:
        frag = parse_sdpfrag(await _bounded_text(request, "trickle-ICE fragment"))
        await request.app[WEBRTC_HUB_KEY].trickle(resource, frag)
    except OfferError as exc:
        raise ApiError(422, str(exc)) from None
    return web.Response(status=204)


@routes.delete("/live/{stream}/{kind}/{id}")
async def resource_delete(request: web.Request) -> web.Response:
    resource = _resource(request)
    await request.app[WEBRTC_HUB_KEY].delete(resource)
    return web.Response(status=200)


def _static(name: str) -> bytes:
    return importlib_resources.files("livestream").joinpath("static", name).read_bytes()


@routes.get("/live/{stream}")
async def player_page(request: web.Request) -> web.Response:
    return web.Response(body=_static(_PAGES["player"]), content_type="text/html", charset="utf-8")


@routes.get("/live/{stream}/publish")
async def publish_page(request: web.Request) -> web.Response:
    return web.Response(body=_static(_PAGES["publish"]), content_type="text/html", charset="utf-8")


@routes.get("/live/{stream}/view")
async def view_page(request: web.Request) -> web.Response:
    return web.Response(body=_static(_PAGES["view"]), content_type="text/html", charset="utf-8")


@routes.get("/webrtc/{name}.js")
async def script(request: web.Request) -> web.Response:
    name = _SCRIPTS.get(request.match_info["name"])
    if name is None:
        raise ApiError(404, "No such script.")
    return web.Response(body=_static(name), content_type="text/javascript", charset="utf-8")


def add_webrtc_routes(app: web.Application) -> None:
    app.router.add_routes(routes)
