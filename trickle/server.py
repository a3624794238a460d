"""The trickle HTTP server (go-livepeer's `trickle_server.go`), as aiohttp routes.

`TrickleServer` owns the channels. Mount it into any aiohttp app with `setup()` (the engine
does, under `/ai/trickle/`), or run it alone with `create_trickle_app()`. Every handler returns
its response; none raises `HTTPException`, so an error middleware of a parent app never sees
trickle's plain-text answers as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from .aiohttp_patches import BodyInterrupted, HeldHeadersResponse, check_aiohttp_version, interrupt_body, send_continue
from .channel import Channel, ReadLookup
from .errors import TrickleChannelError, TrickleChannelLimitError, TrickleConfigError, TrickleRequestError
from .protocol import (
    CLOSED_VALUE,
    CURRENT_SEQ,
    HEADER_CLOSED,
    HEADER_EXPECT_CONTENT,
    HEADER_LATEST,
    HEADER_RESET,
    HEADER_SEQ,
    NEXT_SEQ,
    STATUS_SEQ_NOT_FOUND,
    parse_seq,
)
from .segment import SegmentBuffer

__all__ = ["TRICKLE_SERVER_KEY", "Hook", "TrickleServer", "TrickleServerConfig", "create_trickle_app"]

log = logging.getLogger(__name__)

#: `before_create(request, channel)` / `before_delete(request, channel)`: raise
#: `TrickleRequestError` to answer with its 4xx status; any other exception answers 500.
Hook = Callable[[web.Request, str], Awaitable[None]]

CHANGEFEED_CHANNEL = "_changes"


@dataclass(frozen=True)
class TrickleServerConfig:
    """Server behaviour and limits. Defaults follow go-livepeer where it has one."""

    #: Create a channel on its first `POST /{ch}/{seq}` or `POST /{ch}` (off in production).
    autocreate: bool = False
    #: Require `Authorization: Bearer <token>` on every request (off, as in go-livepeer).
    auth_token: str | None = None
    #: Channels held at once; creating one more answers 503.
    max_streams: int = 1000
    #: Bytes per segment; a POST that sends more answers 413 and its segment is closed.
    max_segment_bytes: int = 64 * 1024 * 1024
    #: Ring slots per channel (go-livepeer's `maxSegmentsPerStream`).
    segments_retained: int = 5
    #: Seconds without a publish before the sweep deletes a channel (`_`-prefixed names are exempt).
    idle_timeout: float = 300.0
    sweep_interval: float = 60.0
    #: Seconds between `100 Continue` keepalives on a POST still waiting for its first byte; None: never.
    keepalive_interval: float | None = 10.0
    #: How often a GET waiting for bytes checks that its client is still connected.
    disconnect_poll_interval: float = 1.0
    max_channel_name_length: int = 256
    #: Publish `{"added":[name]}` / `{"removed":[name]}` segments on channel `_changes`.
    changefeed: bool = False
    before_create: Hook | None = None
    before_delete: Hook | None = None

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_segment_bytes", "segments_retained", "max_channel_name_length"):
            if getattr(self, name) < 1:
                raise TrickleConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("idle_timeout", "sweep_interval", "disconnect_poll_interval"):
            if getattr(self, name) <= 0:
                raise TrickleConfigError(f"{name} must be > 0, got {getattr(self, name)}.")
        if self.keepalive_interval is not None and self.keepalive_interval <= 0:
            raise TrickleConfigError(f"keepalive_interval must be > 0 or None, got {self.keepalive_interval}.")
        if self.auth_token == "":
            raise TrickleConfigError("auth_token must not be empty; use None to turn authentication off.")


def _text(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A Go `http.Error` answer: the message plus a newline, as text/plain."""
    response = web.Response(status=status, text=message + "\n", content_type="text/plain", headers=headers)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _normalize_base_path(base_path: str) -> str:
    stripped = base_path.strip("/")
    return f"/{stripped}/" if stripped else "/"


class TrickleServer:
    """Channels and their HTTP handlers.

    In-process use (the engine's own sessions)::

        server = request.app[TRICKLE_SERVER_KEY]
        server.create_channel(f"{mid}-out", "video/MP2T")
        ...
        server.close_channel(f"{mid}-out")
    """

    def __init__(self, config: TrickleServerConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or TrickleServerConfig()
        self._clock = clock
        self._channels: dict[str, Channel] = {}
        self.base_path = "/"
        if self.config.changefeed:
            self._channels[CHANGEFEED_CHANNEL] = self._new_channel(CHANGEFEED_CHANNEL, "application/json")

    # -- in-process API ------------------------------------------------------------------------

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self._channels

    def get_channel(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def create_channel(self, name: str, mime_type: str = "") -> Channel:
        """Get or create channel `name` (an existing channel is returned unchanged)."""
        channel = self._channels.get(name)
        if channel is not None:
            return channel
        if not name or "/" in name or len(name) > self.config.max_channel_name_length:
            raise TrickleChannelError(f"invalid channel name {name!r}")
        if len(self._channels) >= self.config.max_streams:
            raise TrickleChannelLimitError(f"the server already holds {len(self._channels)} channels (max_streams)")
        channel = self._new_channel(name, mime_type)
        self._channels[name] = channel
        log.info("created channel %s (%s)", name, mime_type or "no mime type")
        self._announce("added", name)
        return channel

    def close_channel(self, name: str) -> bool:
        """Close and remove channel `name`; False when there is none."""
        channel = self._channels.pop(name, None)
        if channel is None:
            return False
        channel.close()
        log.info("deleted channel %s", name)
        self._announce("removed", name)
        return True

    def close_all(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def sweep(self) -> list[str]:
        """Delete channels idle longer than `idle_timeout`; returns their names."""
        idle = [
            name
            for name, channel in self._channels.items()
            if not name.startswith("_") and channel.idle_for() > self.config.idle_timeout
        ]
        for name in idle:
            log.info("closing idle channel %s", name)
            self.close_channel(name)
        return idle

    # -- mounting ------------------------------------------------------------------------------

    def setup(self, app: web.Application, base_path: str = "/") -> None:
        """Add the trickle routes under `base_path` to `app`, store `self` under `TRICKLE_SERVER_KEY`,
        and tie the idle sweep to the app's lifetime.

        Raises `UnsupportedVersionError` if aiohttp is a version the server's patches do not support.
        """
        check_aiohttp_version()
        base = _normalize_base_path(base_path)
        self.base_path = base
        router = app.router
        router.add_route("POST", base + "{channel}", self._handle_create)
        router.add_route("DELETE", base + "{channel}", self._handle_delete_channel)
        router.add_route("GET", base + "{channel}/{seq}", self._handle_get)
        router.add_route("POST", base + "{channel}/{seq}", self._handle_post)
        router.add_route("DELETE", base + "{channel}/{seq}", self._handle_delete_segment)
        app[TRICKLE_SERVER_KEY] = self
        app.cleanup_ctx.append(self._lifetime)
        app.on_shutdown.append(self._on_shutdown)

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(self._sweep_forever(), name="trickle-idle-sweep")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            self.close_all()

    async def _on_shutdown(self, app: web.Application) -> None:
        # Wake every waiting GET and preconnected POST so shutdown need not wait for them.
        self.close_all()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            self.sweep()

    # -- helpers -------------------------------------------------------------------------------

    def _new_channel(self, name: str, mime_type: str) -> Channel:
        return Channel(name, mime_type, ring_size=self.config.segments_retained, clock=self._clock)

    def _announce(self, event: str, name: str) -> None:
        feed = self._channels.get(CHANGEFEED_CHANNEL)
        if feed is None or name == CHANGEFEED_CHANNEL:
            return
        segment = feed.get_for_write(NEXT_SEQ)
        feed.mark_written(segment.seq)
        segment.append(json.dumps({event: [name]}).encode())
        segment.close()

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        token = self.config.auth_token
        if token is None:
            return None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return None
        return _text(401, "Unauthorized", {"WWW-Authenticate": "Bearer"})

    def _autocreate(self, name: str, mime_type: str) -> Channel | web.Response | None:
        channel = self._channels.get(name)
        if channel is not None or not self.config.autocreate:
            return channel
        try:
            return self.create_channel(name, mime_type)
        except TrickleChannelLimitError:
            return _text(503, "Too many streams", {"Connection": "close"})
        except TrickleChannelError:
            return _text(400, "Invalid stream name")

    async def _run_hook(self, hook: Hook | None, request: web.Request, name: str) -> web.Response | None:
        if hook is None:
            return None
        try:
            await hook(request, name)
        except TrickleRequestError as exc:
            status = exc.status if 400 <= exc.status < 500 else 400
            return _text(status, exc.message or f"status {status}")
        except Exception as exc:  # a user hook: any failure is a 500, as in go-livepeer
            log.warning("trickle hook failed for %s: %r", name, exc)
            return _text(500, str(exc) or type(exc).__name__)
        return None

    # -- channel routes ------------------------------------------------------------------------

    async def _handle_create(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        name = request.match_info["channel"]
        if (refused := await self._run_hook(self.config.before_create, request, name)) is not None:
            return refused
        found = self._autocreate(name, request.headers.get(HEADER_EXPECT_CONTENT, ""))
        if isinstance(found, web.Response):
            return found
        if found is None:
            return _text(404, "Stream not found")
        return web.Response()

    async def _handle_delete_channel(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        name = request.match_info["channel"]
        if (refused := await self._run_hook(self.config.before_delete, request, name)) is not None:
            return refused
        if not self.close_channel(name):
            return _text(400, "Invalid stream")
        return web.Response()

    async def _handle_delete_segment(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        channel = self._channels.get(request.match_info["channel"])
        if channel is None:
            return _text(404, "Stream not found")
        seq = parse_seq(request.match_info["seq"], lowest=0)
        if seq is None:
            return _text(400, "Invalid idx")
        segment = channel.segment_at(seq)
        if segment is None:
            return _text(400, "Nonexistent segment")
        log.debug("channel %s: DELETE closes seq %d", channel.name, seq)
        segment.close()
        return web.Response()

    # -- publish -------------------------------------------------------------------------------

    async def _handle_post(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        found = self._autocreate(request.match_info["channel"], request.headers.get("Content-Type", ""))
        if isinstance(found, web.Response):
            return found
        if found is None:
            # `Connection: close` wakes up preconnected go clients.
            return _text(404, "Stream not found", {"Connection": "close"})
        seq = parse_seq(request.match_info["seq"], lowest=NEXT_SEQ)
        if seq is None:
            return _text(400, "Invalid idx")
        channel = found
        segment = channel.get_for_write(seq)
        if request.headers.get(HEADER_RESET, ""):
            channel.reset_before(segment.seq)
        return await self._receive(request, channel, segment)

    async def _receive(self, request: web.Request, channel: Channel, segment: SegmentBuffer) -> web.Response:
        content = request.content
        limit = self.config.max_segment_bytes
        total = 0
        try:
            chunk = await self._first_chunk(request, segment)
            if not chunk:
                channel.mark_written(segment.seq)
                headers = {HEADER_SEQ: str(segment.seq), "Connection": "close"}
                if channel.closed:
                    headers[HEADER_CLOSED] = CLOSED_VALUE
                segment.close()
                log.debug("channel %s: seq %d ended empty", channel.name, segment.seq)
                return web.Response(headers=headers)
            channel.mark_written(segment.seq)
            while chunk:
                total += len(chunk)
                if total > limit:
                    log.warning("channel %s: seq %d exceeds %d bytes; closing it", channel.name, segment.seq, limit)
                    segment.close()
                    return _text(413, f"Segment exceeds {limit} bytes", {"Connection": "close"})
                segment.append(chunk)
                chunk = await content.readany()
        except (OSError, HttpProcessingError, ClientPayloadError) as exc:
            # The publisher went away mid-segment. As in go-livepeer the segment stays open: a
            # per-segment DELETE, a reset, slot reuse or channel delete releases its readers.
            log.info("channel %s: seq %d body failed after %d bytes: %r", channel.name, segment.seq, total, exc)
            return _text(500, "Server error")
        segment.close()
        return web.Response(headers={HEADER_SEQ: str(segment.seq)})

    async def _first_chunk(self, request: web.Request, segment: SegmentBuffer) -> bytes:
        """The body's first chunk; b"" at end of body or when the segment is (or gets) closed.

        A preconnected POST may wait here for any length of time; every `keepalive_interval`
        it gets an interim `100 Continue`, as from go-livepeer. A close interrupts the wait by
        failing the request's body stream (`interrupt_body`): no helper task, so the first bytes
        of a segment reach readers with no extra event-loop round trips. The answer then says
        `Connection: close`, and aiohttp closes the connection quietly.
        """
        if segment.closed:
            return b""

        def interrupt() -> None:
            interrupt_body(request)

        segment.add_close_callback(interrupt)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.keepalive_interval):
                        return await request.content.readany()
                except BodyInterrupted:
                    return b""
                except TimeoutError:
                    await send_continue(request)
        finally:
            segment.remove_close_callback(interrupt)

    # -- subscribe -----------------------------------------------------------------------------

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        channel = self._channels.get(request.match_info["channel"])
        if channel is None:
            return _text(404, "Stream not found")
        seq_text = request.match_info["seq"]
        if seq_text == "next":
            return self._next(channel)
        seq = parse_seq(seq_text, lowest=CURRENT_SEQ)
        if seq is None:
            return _text(400, "Invalid idx")
        lookup = channel.get_for_read(seq)
        if lookup.segment is None:
            headers = {HEADER_LATEST: str(lookup.latest), HEADER_SEQ: str(lookup.seq)}
            if lookup.closed:
                headers[HEADER_CLOSED] = CLOSED_VALUE
                return web.Response(text="Entry not found", content_type="text/plain", headers=headers)
            return web.Response(
                status=STATUS_SEQ_NOT_FOUND,
                reason="status code 470",
                text="Entry not found",
                content_type="text/plain",
                headers=headers,
            )
        return await self._send_segment(request, channel, lookup, lookup.segment)

    def _next(self, channel: Channel) -> web.Response:
        latest = str(channel.next_write)
        headers = {HEADER_LATEST: latest}
        if channel.closed:
            headers[HEADER_CLOSED] = CLOSED_VALUE
        return web.Response(text=latest, content_type="text/plain", headers=headers)

    async def _send_segment(
        self, request: web.Request, channel: Channel, lookup: ReadLookup, segment: SegmentBuffer
    ) -> web.StreamResponse:
        # Headers go out only with the first bytes (or at close): that is what makes a
        # preconnected GET block until the publisher starts the segment.
        response: web.StreamResponse | None = None
        index = 0
        poll = self.config.disconnect_poll_interval
        try:
            while True:
                data = segment.chunks_from(index)
                if data:
                    index = segment.chunk_count
                    if response is None:
                        response = HeldHeadersResponse()
                        if segment.seq != lookup.latest:
                            response.headers[HEADER_LATEST] = str(lookup.latest)
                        response.headers[HEADER_SEQ] = str(segment.seq)
                        response.headers["Content-Type"] = channel.mime_type
                        response.enable_chunked_encoding()
                        await response.prepare(request)
                    await response.write(data)
                    continue
                if segment.closed:
                    break
                try:
                    async with asyncio.timeout(poll):
                        await segment.wait_beyond(index)
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        log.debug("channel %s: reader of seq %d went away", channel.name, segment.seq)
                        return response if response is not None else web.Response()
        except ConnectionResetError:
            log.debug("channel %s: reader of seq %d disconnected", channel.name, segment.seq)
            return response if response is not None else web.Response()
        if response is None:
            headers = {HEADER_SEQ: str(segment.seq), HEADER_LATEST: str(channel.next_write)}
            if channel.closed:
                headers[HEADER_CLOSED] = CLOSED_VALUE
            return web.Response(headers=headers)
        await response.write_eof()
        return response


TRICKLE_SERVER_KEY = web.AppKey("trickle_server", TrickleServer)
"""Where `TrickleServer.setup()` stores the server in its app (for in-process channel creation)."""


def create_trickle_app(config: TrickleServerConfig, base_path: str = "/") -> web.Application:
    """A standalone aiohttp app serving only trickle under `base_path`."""
    app = web.Application()
    TrickleServer(config).setup(app, base_path)
    return app
