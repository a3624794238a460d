"""The embedded RTMP server: a thin asyncio shell around `protocol.ServerConnection`.

    async with RtmpServer(manager, settings, port=1935) as server:
        ...                          # OBS/ffmpeg publish rtmp://host:1935/live/<key>

Each connection is one task the server owns (cancelled and awaited on close). A publish is
authorized (`auth.py`), then becomes a direct session (`SessionManager.start_direct`) whose
input is an `RtmpIngest` fed by this connection. Everything a publisher can get wrong ends that
connection only, with one log line: garbage or a broken protocol, a disconnect mid-handshake or
mid-message, an unsupported codec (the session ends with that error), no data for
`idle_timeout` seconds (the session ends "input stalled"), a stream name already live
(`NetStream.Publish.BadName`, the first publisher keeps going), a wrong key
(`NetStream.Publish.Unauthorized`). A refused publisher never gets Publish.Start, so OBS shows
an error instead of reconnecting in a loop.

RTMPS is the same server behind TLS (`ssl_context`, see `server_ssl_context`): the engine runs a
second instance on `--rtmps-port` with `--tls-cert/--tls-key`; stream keys, auth and sessions
are shared. A client that opens a connection and never completes the TLS handshake is dropped
after `idle_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import aiohttp

from pipelines.errors import InvalidRequestError

from ..errors import SessionLimitError, StreamBusyError
from ..ingest import Ingest, IngestError, InputStalled
from ..live.client_limits import ClientSessions
from ..live.auth_webhook import AuthReply
from ..server_close import stop_accepting
from .auth import PublishRejected, authorize
from .chunks import ChunkReader
from .flv import FlvError, parse_audio, parse_video
from .ingest import RtmpIngest
from .protocol import Media, Metadata, ProtocolError, PublishRequested, ServerConnection, Unpublished

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["DirectStarter", "RtmpServer", "server_ssl_context"]


class DirectStarter(Protocol):
    """Where an accepted publish goes: the engine's `SessionManager`, or the gateway's relay."""

    async def start_direct(self, stream: str, ingest: Ingest) -> object:
        """Raises `StreamBusyError`, `SessionLimitError` or `InvalidRequestError` to refuse it."""

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024


async def _preset(manager: DirectStarter, name: str, replies: list[AuthReply]) -> None:
    """The auth webhook's `pipeline_parameters` and `rtmp_output_url` become the stream's preset
    (the engine's `POST /live/{stream}`), where the owner keeps presets."""
    body: dict[str, object] = {}
    for reply in replies:
        if reply.params is not None:
            body["params"] = reply.params
        if reply.rtmp_output_url:
            body["rtmp_output"] = reply.rtmp_output_url
    configure = getattr(manager, "configure", None)
    if body and configure is not None:
        await configure(name, body, trusted=True)  # the operator's webhook: its URLs are not guarded


class RtmpServer:
    """Accepts RTMP publishers and turns each into a live session."""

    def __init__(
        self,
        manager: DirectStarter,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        idle_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ingest_factory: Callable[[str, Callable[[], None]], RtmpIngest] | None = None,
    ) -> None:
        self.manager = manager
        #: Builds each publisher's ingest (name, on_stop); the gateway's copies packets instead of decoding.
        self.ingest_factory = ingest_factory or (lambda name, on_stop: RtmpIngest(name, on_stop=on_stop))
        self.settings = settings
        self.host = host if host is not None else settings.host
        self.port = port if port is not None else settings.rtmp_port
        self.idle_timeout = idle_timeout if idle_timeout is not None else settings.rtmp_idle_timeout
        #: TLS: this is an RTMPS listener.
        self.ssl_context = ssl_context
        self.scheme = "rtmps" if ssl_context is not None else "rtmp"
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        #: Counters (status, tests).
        self.accepted = 0
        self.rejected = 0
        self.protocol_errors = 0
        #: `--limit sessions_per_client`: streams published from one address at once.
        self.client_sessions = ClientSessions(settings.stream_limits.sessions_per_client)
        self.live_streams: set[str] = set()

    async def __aenter__(self) -> RtmpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        tls = self.ssl_context
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            limit=_READ_SIZE,
            ssl=tls,
            ssl_handshake_timeout=self.idle_timeout if tls is not None else None,
        )
        if self.settings.auth_webhook_url:
            self._http = aiohttp.ClientSession()
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("%s ingest listening on %s://%s:%d/live", self.scheme.upper(), self.scheme, self.host, self.port)

    async def close(self) -> None:
        """Stop accepting, end every connection, await their tasks. Idempotent."""
        if self._server is not None:
            server, self._server = self._server, None
            await stop_accepting([server])
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        task = asyncio.create_task(_Connection(self, reader, writer, where).run(), name=f"rtmp-{where}")
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The TLS context of an RTMPS listener (PEM files); raises `ssl.SSLError`/`OSError`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class _Connection:
    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.where = where
        limits = server.settings.stream_limits
        self.proto = ServerConnection(reader=ChunkReader(max_chunk_size=limits.rtmp_chunk_size, max_message_size=limits.rtmp_message_bytes))
        self.ingest: RtmpIngest | None = None
        self.stream: str | None = None
        self._closing = False

    async def run(self) -> None:
        reason = "disconnected"
        failure: IngestError | None = None
        try:
            reason = await self._serve()
        except ProtocolError as exc:
            self.server.protocol_errors += 1
            reason = f"protocol error: {exc}"
            failure = IngestError(f"rtmp publisher {self.where}: {reason}")
            log.warning("rtmp %s: %s; closing the connection", self.where, exc)
        except IngestError as exc:  # InputStalled, or a decoder that takes nothing
            reason, failure = str(exc), exc
            log.warning("rtmp %s: %s", self.where, exc)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost ({exc.__class__.__name__})"
        except asyncio.CancelledError:
            reason = "engine shutting down"
            raise
        finally:
            self._finish(reason, failure)
            self.writer.close()
            try:
                async with asyncio.timeout(1):
                    await self.writer.wait_closed()
            except (OSError, TimeoutError) as exc:  # the connection ends either way
                log.debug("rtmp %s: socket close: %s: %s", self.where, type(exc).__name__, exc)
            except Exception:
                log.warning("rtmp %s: socket close failed", self.where, exc_info=True)

    def _finish(self, reason: str, failure: IngestError | None) -> None:
        """The connection ended: its stream ends too, cleanly or with `failure`."""
        ingest = self.ingest
        if ingest is None:
            if self.stream is None and not self._closing:
                log.info("rtmp %s: closed before publishing (%s)", self.where, reason)
            return
        if failure is not None:
            ingest.fail(failure)
        else:
            ingest.end()
        self.server.live_streams.discard(self.stream or "")
        log.info("rtmp %s: stream %s ended (%s)", self.where, self.stream, reason)

    async def _read(self) -> bytes:
        timeout = self.server.idle_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(_READ_SIZE)
        except TimeoutError:
            what = "publisher" if self.ingest is not None else "client"
            raise InputStalled(f"input stalled: the RTMP {what} sent nothing for {timeout:g} s") from None

    async def _flush(self) -> None:
        data = self.proto.data_to_send()
        if data:
            self.writer.write(data)
            async with asyncio.timeout(self.server.idle_timeout):
                await self.writer.drain()

    async def _serve(self) -> str:
        while not self._closing:
            data = await self._read()
            if not data:
                if self.ingest is not None:
                    return "publisher disconnected"
                return "disconnected mid-handshake" if not self.proto.handshake_done else "disconnected"
            events = self.proto.feed(data)
            arrival = time.monotonic()
            for event in events:
                if isinstance(event, Media):
                    self._media(event, arrival)
                elif isinstance(event, PublishRequested):
                    if not await self._publish(event):
                        await self._flush()
                        return "publish refused"
                elif isinstance(event, Metadata):
                    if self.ingest is not None:
                        self.ingest.metadata = dict(event.values)
                elif isinstance(event, Unpublished):
                    await self._flush()
                    return "unpublished"
            await self._flush()
            if self.ingest is not None:
                await self._wait_room(self.ingest)
        await self._flush()
        return "stopped by the engine"

    async def _wait_room(self, ingest: RtmpIngest) -> None:
        """Back-pressure: wait until the decode thread has room again, for at most the idle
        timeout (a decoder that takes nothing for that long ends the stream)."""
        timeout = self.server.idle_timeout
        try:
            async with asyncio.timeout(timeout):
                await ingest.wait_room()
        except TimeoutError:
            raise IngestError(f"the decoder took no input for {timeout:g} s; ending the stream") from None

    def _media(self, event: Media, arrival: float) -> None:
        ingest = self.ingest
        if ingest is None:
            return
        try:
            tag = parse_video(event.payload) if event.kind == "video" else parse_audio(event.payload)
        except FlvError as exc:
            if event.kind == "audio":
                if ingest.audio_codec != "unsupported":
                    ingest.audio_codec = "unsupported"
                    log.warning("rtmp %s: stream %s: %s; audio dropped", self.where, self.stream, exc)
                return
            log.warning("rtmp %s: stream %s: %s; disconnecting", self.where, self.stream, exc)
            ingest.fail(IngestError(f"rtmp stream {self.stream}: {exc}"))
            self._closing = True
            return
        if tag is not None:
            ingest.put(tag, event.timestamp, arrival)

    async def _publish(self, event: PublishRequested) -> bool:
        server = self.server
        settings = server.settings
        replies: list[AuthReply] = []
        try:
            name = await authorize(
                event.name,
                app=event.app,
                tc_url=event.tc_url,
                stream_keys=settings.stream_keys,
                webhook_url=settings.auth_webhook_url,
                http=server._http,
                replies=replies,
            )
        except PublishRejected as exc:
            server.rejected += 1
            log.warning("rtmp %s: publish to app %r refused: %s", self.where, event.app, exc)
            self.proto.reject_publish("NetStream.Publish.Unauthorized", f"Publish refused: {exc}.")
            return False
        self.stream = name
        ingest = server.ingest_factory(name, self._stop_from_session)
        ingest.query = event.name.partition("?")[2]
        try:
            client = self.where.rpartition(":")[0]
            server.client_sessions.check("rtmp", client, server.live_streams.__contains__)
            await _preset(server.manager, name, replies)
            await server.manager.start_direct(name, ingest)
        except StreamBusyError as exc:
            server.rejected += 1
            log.warning("rtmp %s: publish of %s refused: %s", self.where, name, exc)
            self.proto.reject_publish("NetStream.Publish.BadName", f"{exc} Use another stream key.")
            return False
        except (SessionLimitError, InvalidRequestError) as exc:
            server.rejected += 1
            log.warning("rtmp %s: publish of %s refused: %s", self.where, name, exc)
            self.proto.reject_publish("NetStream.Publish.Rejected", str(exc))
            return False
        self.ingest = ingest
        server.live_streams.add(name)
        server.client_sessions.add("rtmp", client, name)
        server.accepted += 1
        self.proto.accept_publish()
        log.info("rtmp %s: publishing stream %s (app %r)", self.where, name, event.app)
        return True

    def _stop_from_session(self) -> None:
        """The session was stopped (DELETE, shutdown): tell the publisher and hang up."""
        if self._closing:
            return
        self._closing = True
        try:
            self.proto.end_stream()
            self.writer.write(self.proto.data_to_send())
        except Exception:  # best effort: the connection is closed next whatever happens
            log.warning("rtmp %s: could not tell the publisher the stream ended", self.where, exc_info=True)
        # Wake the read loop: closing the transport makes read() return b"".
        self.writer.transport.close()
