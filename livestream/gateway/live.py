"""Live streams through the gateway: the gateway plays go-livepeer's orchestrator to its runners.

For each stream the gateway hosts, on its own trickle server (`/ai/trickle/`):

    client ──MPEG-TS──▶ {stream}          (the stream's input, published by the client)
    viewers ◀────────── {stream}-out      (the stream's output, one segment per runner segment)

and, for the runner serving it now (one "attempt"; a swap starts another with a new id `mid`):

    {mid}          gateway → runner   the input segments, copied from {stream}
    {mid}-out      runner → gateway   copied segment by segment into {stream}-out
    {mid}-control  gateway → runner   params updates and {"keep":"alive"} every 10 s
    {mid}-events   runner → gateway   status/error events: the heartbeat

The runner is started with `POST {runner}/live-video-to-video` exactly as an orchestrator does
(the four URLs, model_id, params, gateway_request_id, stream_id, manifest_id). Relaying is
in-process on the channels' segment buffers (no decode, no extra HTTP hop): a chunk the runner
POSTs is readable by viewers at once.

When no runner of ours takes a stream, a go-livepeer orchestrator advertising the live
capability is started as go-livepeer's gateway does (`POST {transcoder}/live-video-to-video`
with the job headers), then a go-livepeer Live Runner (`live_runner_orchestrators`, through
`liverunner/client.py`). Those host the four channels themselves: the attempt then publishes
with `RemoteWriter` and reads with `remote_source` (HTTP trickle) instead of the in-process
buffers; the viewer channel `{stream}-out` stays the gateway's own either way.

Failover: a watchdog per attempt swaps the runner when it dies (its `/health` fails twice in a
row, probed every `live_health_interval`), when no output segment came for `live_output_timeout`
(`live_start_timeout` for the first), when no event came for 30 s, or on an error storm. The new
runner gets the stream's current params and the input segment in progress from its start (a
keyframe), so viewers see one keyframe gap and no reconnect. go-livepeer's limits hold: at most
`live_max_swaps` swaps per `live_swap_window` seconds (2 per 3 min), no swap once the input is
gone, the old runner suspended (`live_suspension_penalty` rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from trickle import Channel, SegmentWriter, TrickleError, TricklePublisher, TrickleServer, TrickleSubscriber
from trickle.segment import SegmentBuffer

from ..liverunner.client import DiscoveredRunner, LiveRunnerClient, LiveRunnerClientError, ReservedSession

from .backends import Backend, Discovery, auth_headers
from .config import GatewayConfig, RunnerConfig
from .payments import LiveSessionPayment, PaymentFailed, live_orchestrator_payer, live_payer
from .selection import NoBackendError, Selector

__all__ = ["LiveError", "LiveStream", "LiveStreams", "read_segments", "segment_chunks"]

log = logging.getLogger(__name__)

PIPELINE = "live-video-to-video"
KEEPALIVE = b'{"keep":"alive"}'
#: go-livepeer's `maxEventGap`.
EVENT_GAP = 30.0
#: go-livepeer's live start timeout (`submitLiveVideoToVideo`).
START_TIMEOUT = 5.0


class LiveError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- in-process channel access ------------------------------------------------------------


async def segment_chunks(segment: SegmentBuffer) -> AsyncIterator[bytes]:
    """The bytes of a segment as they arrive, from byte 0, until it closes."""
    index = 0
    while True:
        data = segment.chunks_from(index)
        if data:
            index = segment.chunk_count
            yield data
            continue
        if segment.closed:
            return
        await segment.wait_beyond(index)


async def read_segments(channel: Channel, start: int = -1) -> AsyncIterator[SegmentBuffer]:
    """The channel's segments from `start` (-1: the next one written) until it closes; a reader
    that fell behind the ring jumps to the live edge."""
    seq = channel.next_write if start == -1 else start
    while not channel.closed:
        lookup = channel.get_for_read(seq)
        if lookup.segment is None:
            if lookup.closed:
                return
            seq = lookup.latest
            await asyncio.sleep(0.05)
            continue
        segment = lookup.segment
        yield segment
        await asyncio.sleep(0)
        if not segment.closed:  # the consumer stopped early: wait for the writer to finish it
            with contextlib.suppress(Exception):
                async for _ in segment_chunks(segment):
                    pass
        seq = segment.seq + 1


class LocalWriter:
    """Writes segments into a channel of the gateway's own trickle server."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._open: SegmentBuffer | None = None

    def begin(self) -> None:
        self.end()
        self._open = self.channel.get_for_write(self.channel.next_write)

    def write(self, data: bytes) -> None:
        if self._open is None:
            self.begin()
        assert self._open is not None
        if self._open.size == 0:
            self.channel.mark_written(self._open.seq)
        self._open.append(data)

    def end(self) -> None:
        if self._open is not None:
            if self._open.size == 0:
                self.channel.mark_written(self._open.seq)
            self._open.close()
            self._open = None

    def send(self, data: bytes) -> None:
        self.begin()
        self.write(data)
        self.end()


class Writer(Protocol):
    """Segments into a trickle channel: `LocalWriter` (the gateway's own) or `RemoteWriter`."""

    def begin(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def end(self) -> None: ...

    def send(self, data: bytes) -> None: ...

    async def aclose(self) -> None:
        """The channel ends (the reader sees its end); the writer is done."""


class LocalChannelWriter(LocalWriter):
    """A `LocalWriter` that owns its channel: `aclose` closes it."""

    def __init__(self, server: TrickleServer, channel: Channel) -> None:
        super().__init__(channel)
        self.server = server

    async def aclose(self) -> None:
        self.end()
        self.server.close_channel(self.channel.name)


class RemoteWriter:
    """The `LocalWriter` calls over a channel elsewhere (a live runner's orchestrator hosts it):
    they are queued in order and one task publishes them with a `TricklePublisher`. A channel
    that fails is logged and its writes dropped (the watchdog then swaps the runner)."""

    def __init__(self, url: str, mime_type: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self._ops: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(mime_type, http), name=f"live-remote-{url[-24:]}")
        self.failed: str | None = None

    def begin(self) -> None:
        self._ops.put_nowait(("begin", b""))

    def write(self, data: bytes) -> None:
        self._ops.put_nowait(("write", data))

    def end(self) -> None:
        self._ops.put_nowait(("end", b""))

    def send(self, data: bytes) -> None:
        self.begin()
        self.write(data)
        self.end()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Publish what is queued (for at most `timeout` s), then DELETE the channel."""
        self._ops.put_nowait(("close", b""))
        done, _ = await asyncio.wait([self._task], timeout=timeout)
        if not done:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self, mime_type: str, http: aiohttp.ClientSession) -> None:
        try:
            async with TricklePublisher(self.url, mime_type, session=http) as publisher:
                async with contextlib.AsyncExitStack() as stack:
                    segment: SegmentWriter | None = None
                    while True:
                        op, data = await self._ops.get()  # idle wait: `aclose` queues "close"
                        if op == "close":
                            return
                        if op in ("begin", "end") and segment is not None:
                            await stack.aclose()
                            segment = None
                        if op == "begin" or (op == "write" and segment is None):
                            segment = await stack.enter_async_context(publisher.segment())
                        if op == "write":
                            assert segment is not None
                            await segment.write(data)
        except TrickleError as exc:
            self.failed = str(exc)
            log.warning("live: channel %s failed: %s", self.url, exc)


SegmentSource = Callable[[], AsyncGenerator[AsyncIterator[bytes], None]]


def local_source(channel: Channel) -> SegmentSource:
    async def segments() -> AsyncGenerator[AsyncIterator[bytes], None]:
        async for segment in read_segments(channel, start=0):
            yield segment_chunks(segment)

    return segments


def remote_source(url: str, http: aiohttp.ClientSession) -> SegmentSource:
    """A channel elsewhere, from its first segment until it ends (a failed read ends it too)."""

    async def segments() -> AsyncGenerator[AsyncIterator[bytes], None]:
        try:
            async with TrickleSubscriber(url, start_seq=0, session=http) as subscriber:
                async for segment in subscriber:
                    yield segment
        except TrickleError as exc:
            log.warning("live: channel %s ended: %s", url, exc)

    return segments


# --- one runner serving a stream -----------------------------------------------------------


@dataclass
class Attempt:
    backend: Backend
    mid: str
    started: float
    input: Writer
    control: Writer
    output: SegmentSource
    events: SegmentSource
    #: A live runner's session on an orchestrator (None: one of our runners).
    session: ReservedSession | None = None
    #: An orchestrator's channels: the HTTP session pinned to its certificate (closed with the attempt).
    remote_http: aiohttp.ClientSession | None = None
    #: An on-chain orchestrator's live payments (top-ups to `{transcoder}/payment`).
    orchestrator_payer: LiveSessionPayment | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    last_output: float | None = None
    last_event: float = 0.0
    segments_out: int = 0
    health_failures: int = 0
    errors: deque[float] = field(default_factory=deque)
    stopped: bool = False


def _serves(runner: DiscoveredRunner, model_id: str) -> bool:
    """A live runner's app is `live-video-to-video[/{model}]` (the engine registers it so)."""
    app, _, model = runner.app.partition("/")
    return app == PIPELINE and (not model_id or not model or model == model_id)


class LiveStream:
    """One stream: its input and output channels, its params, the attempt serving it now."""

    def __init__(self, streams: LiveStreams, name: str, stream_id: str, model_id: str, params: dict[str, Any],
                 trickle_base: str, orchestrator: str = "") -> None:  # fmt: skip
        self.streams = streams
        self.name = name
        self.stream_id = stream_id
        self.model_id = model_id
        self.params = params
        self.trickle_base = trickle_base
        self.orchestrator = orchestrator
        self.request_id = secrets.token_hex(4)
        server = streams.server
        self.input_channel = server.create_channel(name, "video/MP2T")
        self.output = LocalWriter(server.create_channel(f"{name}-out", "video/MP2T"))
        self.attempt: Attempt | None = None
        self.swap_times: deque[float] = deque()
        self.swaps = 0
        self.swap_log: list[dict[str, Any]] = []
        self.input_ended = False
        self.ended: str | None = None
        self.error: dict[str, Any] | None = None
        self.last_status: dict[str, Any] | None = None
        self.segments_in = 0
        self.segments_out = 0
        self.last_output: float | None = None
        self.created = time.monotonic()
        self._chunks: list[bytes] = []  # the input segment in progress, replayed to a new runner
        self._fed: Attempt | None = None
        self._swapping = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        attempt = await self._start_attempt(exclude=())
        self.attempt = attempt
        self._pump = asyncio.create_task(self._pump_input(), name=f"live-input-{self.name}")

    async def _start_attempt(self, exclude: tuple[Backend, ...]) -> Attempt:
        tried: list[Backend] = list(exclude)
        cfg = self.streams.config
        last = "no runner"
        for _ in range(max(1, cfg.max_tries)):
            candidates = [b for b in self.streams.discovery.up() if not self.orchestrator or self.orchestrator in b.url]
            try:
                backend = self.streams.selector.pick(candidates, PIPELINE, self.model_id, exclude=tried)
            except NoBackendError as exc:
                orchestrator = self._pick_orchestrator(candidates, tried)
                if orchestrator is not None:
                    backend = orchestrator
                elif cfg.live_runner_orchestrators:
                    return await self._start_on_live_runner(exclude={b.url for b in tried})
                else:
                    raise LiveError(503, f"{exc} ({last})" if tried else str(exc)) from None
            tried.append(backend)
            try:
                return await self._start_on(backend)
            except (aiohttp.ClientError, TimeoutError, LiveError) as exc:
                last = f"{backend.url}: {exc}"
                log.warning("live %s: start on %s failed: %s", self.name, backend.url, exc)
                backend.suspend(cfg.live_suspension_penalty, f"live start failed: {exc}")
        raise LiveError(503, f"no runner took the stream ({last})")

    def _pick_orchestrator(self, candidates: list[Backend], tried: list[Backend]) -> Backend | None:
        """After our runners: an orchestrator (up, not tried) that advertises the live capability
        and the stream's model (any model when the stream names none), the least busy first."""
        found = []
        for backend in candidates:
            info = backend.info
            if info is None or backend in tried or backend.state != "up":
                continue
            models = info.models(PIPELINE)
            if models is not None and (not self.model_id or not models or self.model_id in models):
                found.append(backend)
        return min(found, key=lambda b: (b.suspended, b.in_flight), default=None)

    async def _start_on_live_runner(self, exclude: set[str]) -> Attempt:
        """No runner of ours took it: a go-livepeer Live Runner (`--live-runner-orchestrator`),
        reserved through the orchestrator's discovery (`liverunner/client.py`, offchain). Its app
        (`POST stream/start` through the orchestrator's proxy) answers with the session's four
        channels, hosted by the orchestrator; the relays publish and subscribe to them over HTTP."""
        http = self.streams.http
        last = "no live runner"
        for orchestrator in self.streams.config.live_runner_orchestrators:
            client = LiveRunnerClient(orchestrator, http)
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    found = await client.discovery()
            except (LiveRunnerClientError, TimeoutError) as exc:
                last = f"{orchestrator}: discovery: {exc}"
                continue
            for runner in found:
                if runner.url in exclude or not _serves(runner, self.model_id):
                    continue
                try:
                    return await self._reserve_on(client, runner)
                except (LiveRunnerClientError, PaymentFailed, TimeoutError, KeyError, TypeError) as exc:
                    last = f"{runner.url}: {exc!r}"
                    log.warning("live %s: live runner %s refused: %s", self.name, runner.url, exc)
        raise LiveError(503, f"no runner or live runner took the stream ({last})")

    async def _reserve_on(self, client: LiveRunnerClient, runner: DiscoveredRunner) -> Attempt:
        # On chain (the gateway has a signer, the runner a price): the 402 flow (payments.py).
        payer = live_payer(self.streams.discovery.payments, runner.raw.get("price_info"), self.streams.http)
        async with asyncio.timeout(START_TIMEOUT):
            session = await client.reserve(runner, payer)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                urls = await session.call("POST", "stream/start", {"params": self.params})
            http = self.streams.http
            attempt = Attempt(
                backend=Backend(RunnerConfig(runner.url)), mid=f"{self.name}-{session.session_id}", started=time.monotonic(),
                input=RemoteWriter(str(urls["input_url"]), "video/MP2T", http),
                control=RemoteWriter(str(urls["control_url"]), "application/json", http),
                output=remote_source(str(urls["output_url"]), http), events=remote_source(str(urls["events_url"]), http),
                session=session,
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(LiveRunnerClientError, TimeoutError):
                async with asyncio.timeout(START_TIMEOUT):
                    await session.stop()
            raise
        attempt.last_event = attempt.started
        self._run_attempt(attempt)
        return attempt

    async def _start_on_orchestrator(self, backend: Backend) -> Attempt:
        """go-livepeer's live start on an orchestrator (offchain): `POST {transcoder}/live-video-to-video`
        `{model_id, params, gateway_request_id, stream_id}` with the job headers, 5 s; the
        orchestrator hosts the four channels and answers their URLs (`publish_url` takes the input,
        `subscribe_url` gives the output), reached with its pinned certificate."""
        assert backend.link is not None
        await self.streams.discovery.refresh_token(backend)
        info = backend.info
        if info is None or backend.state != "up":
            raise LiveError(503, f"orchestrator unavailable: {backend.last_error or backend.state}")
        ssl = await backend.link.job_ssl(info.transcoder)
        body = {"model_id": self.model_id, "params": self.params, "gateway_request_id": self.request_id,
                "stream_id": self.stream_id}  # fmt: skip
        headers = {"Content-Type": "application/json", **info.job_headers(PIPELINE, self.model_id)}
        payer = None
        if info.needs_payment:  # on chain: the start carries the first 60 s (go-livepeer's initPixelsToPay)
            payments = self.streams.discovery.payments
            if payments is None:
                raise LiveError(503, "on-chain orchestrator and no signer (--eth-keystore or --remote-signer-url)")
            payer = live_orchestrator_payer(payments, backend.url, backend.link, self.model_id)
            try:
                headers.update(await payer.start_fetched(self.request_id, backend.url))
            except PaymentFailed as exc:
                raise LiveError(402, f"live payment: {exc}") from None
        async with self.streams.http.post(info.transcoder + "/" + PIPELINE, json=body, headers=headers, ssl=ssl,
                                          timeout=aiohttp.ClientTimeout(total=START_TIMEOUT)) as resp:  # fmt: skip
            if resp.status != 200:
                raise LiveError(resp.status, f"answered {resp.status}: {(await resp.text())[:200]}")
            urls = await resp.json()
        try:
            names = ("publish_url", "subscribe_url", "control_url", "events_url")
            publish, subscribe, control, events = (str(urls[k]) for k in names)
        except (KeyError, TypeError):
            raise LiveError(502, f"unexpected live start answer {urls!r:.200}") from None
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl))
        attempt = Attempt(
            backend=backend, mid=str(urls.get("manifest_id") or secrets.token_hex(4)), started=time.monotonic(),
            input=RemoteWriter(publish, "video/MP2T", http), control=RemoteWriter(control, "application/json", http),
            output=remote_source(subscribe, http), events=remote_source(events, http), remote_http=http,
            orchestrator_payer=payer,
        )  # fmt: skip
        attempt.last_event = attempt.started
        self._run_attempt(attempt)
        return attempt

    async def _start_on(self, backend: Backend) -> Attempt:
        if backend.link is not None:
            return await self._start_on_orchestrator(backend)
        server = self.streams.server
        mid = f"{self.name}-{secrets.token_hex(4)}"
        channels = {
            "subscribe_url": (mid, "video/MP2T"),
            "publish_url": (f"{mid}-out", "video/MP2T"),
            "control_url": (f"{mid}-control", "application/json"),
            "events_url": (f"{mid}-events", "application/json"),
        }
        made = {key: server.create_channel(name, mime) for key, (name, mime) in channels.items()}
        attempt = Attempt(
            backend=backend, mid=mid, started=time.monotonic(), input=LocalChannelWriter(server, made["subscribe_url"]),
            control=LocalChannelWriter(server, made["control_url"]), output=local_source(made["publish_url"]),
            events=local_source(made["events_url"]),
        )  # fmt: skip
        attempt.last_event = attempt.started
        body: dict[str, Any] = {key: self.trickle_base + name for key, (name, _) in channels.items()}
        body.update(model_id=self.model_id, params=self.params, gateway_request_id=self.request_id,
                    stream_id=self.stream_id, manifest_id=mid)  # fmt: skip
        try:
            async with self.streams.http.post(
                backend.url + "/" + PIPELINE, json=body, headers=auth_headers(backend.config),
                timeout=aiohttp.ClientTimeout(total=START_TIMEOUT),
            ) as resp:  # fmt: skip
                if resp.status != 200:
                    raise LiveError(resp.status, f"answered {resp.status}: {(await resp.text())[:200]}")
        except BaseException:
            for name, _ in channels.values():
                server.close_channel(name)
            raise
        self._run_attempt(attempt)
        return attempt

    def _run_attempt(self, attempt: Attempt) -> None:
        mid = attempt.mid
        attempt.backend.in_flight += 1
        attempt.tasks = [
            asyncio.create_task(self._relay_output(attempt), name=f"live-out-{mid}"),
            asyncio.create_task(self._read_events(attempt), name=f"live-events-{mid}"),
            asyncio.create_task(self._keepalive(attempt), name=f"live-keepalive-{mid}"),
            asyncio.create_task(self._watch(attempt), name=f"live-watch-{mid}"),
        ]
        if (attempt.session is not None and attempt.session.payer is not None) or attempt.orchestrator_payer is not None:
            attempt.tasks.append(asyncio.create_task(self._pay(attempt), name=f"live-pay-{mid}"))
        log.info("live %s: started on %s (%s)", self.name, attempt.backend.url, mid)

    async def _stop_attempt(self, attempt: Attempt) -> None:
        if attempt.stopped:
            return
        attempt.stopped = True
        attempt.backend.in_flight = max(0, attempt.backend.in_flight - 1)
        current = asyncio.current_task()
        try:
            for task in attempt.tasks:
                if task is not current:
                    task.cancel()
            for task in attempt.tasks:
                if task is not current:
                    with contextlib.suppress(BaseException):
                        await task
            await attempt.input.aclose()
            await attempt.control.aclose()
        finally:  # even when the stop itself is cancelled (the gateway stopping)
            if attempt.remote_http is not None:
                await attempt.remote_http.close()
        if attempt.session is not None:
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    await attempt.session.stop()
            except (LiveRunnerClientError, TimeoutError) as exc:
                log.warning("live %s: stopping live runner session %s: %s", self.name, attempt.session.session_id, exc)
        elif attempt.remote_http is None:
            for suffix in ("-out", "-events"):
                self.streams.server.close_channel(attempt.mid + suffix)

    async def failover(self, attempt: Attempt, reason: str) -> None:
        """Swap `attempt`'s runner for another one, within go-livepeer's limits."""
        async with self._swapping:
            if attempt is not self.attempt or self.ended is not None:
                return
            cfg = self.streams.config
            now = time.monotonic()
            log.warning("live %s: runner %s failed: %s", self.name, attempt.backend.url, reason)
            self.error = {"error_message": reason, "error_time": time.time()}
            attempt.backend.suspend(cfg.live_suspension_penalty, f"live: {reason}")
            self.streams.on_suspend(attempt.backend)
            await self._stop_attempt(attempt)
            while self.swap_times and now - self.swap_times[0] > cfg.live_swap_window:
                self.swap_times.popleft()
            if self.input_ended:
                await self.finish(f"runner failed after the input ended: {reason}")
                return
            if len(self.swap_times) >= cfg.live_max_swaps:
                await self.finish(f"too many swaps ({len(self.swap_times)} in {cfg.live_swap_window:g} s): {reason}")
                return
            try:
                new = await self._start_attempt(exclude=(attempt.backend,))
            except LiveError as exc:
                await self.finish(f"no runner to swap to: {exc.message}")
                return
            if self.ended is not None:  # the stream ended while the new runner started: stop it too
                await self._stop_attempt(new)
                return
            self.swap_times.append(now)
            self.swaps += 1
            self.swap_log.append({"from": attempt.backend.url, "to": new.backend.url, "reason": reason,
                                  "seconds": round(time.monotonic() - now, 3)})  # fmt: skip
            self.attempt = new
            self.streams.on_swap(self)
            # The input segment in progress goes to the new runner from its start (a keyframe).
            if self._chunks and not self.input_ended:
                self._feed(new)

    async def finish(self, reason: str) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        log.info("live %s: ended: %s", self.name, reason)
        if self.attempt is not None:
            await self._stop_attempt(self.attempt)
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
        self.output.end()
        self.streams.server.close_channel(self.name)
        self.streams.server.close_channel(f"{self.name}-out")
        self.done.set()
        self.streams.forget(self)

    # -- params --------------------------------------------------------------------------------

    def update(self, body: bytes) -> None:
        """go-livepeer's `/update`: the raw body goes on the control channel; JSON objects are
        also merged into the params a new runner starts with."""
        try:
            params = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            params = None
        if isinstance(params, dict):
            self.params = {**self.params, **params}
        if self.attempt is not None and not self.attempt.stopped:
            self.attempt.control.send(body)

    # -- relays --------------------------------------------------------------------------------

    def _feed(self, attempt: Attempt) -> None:
        attempt.input.begin()
        for chunk in self._chunks:
            attempt.input.write(chunk)
        self._fed = attempt

    async def _pump_input(self) -> None:
        try:
            async for segment in read_segments(self.input_channel, start=0):
                self._chunks = []
                self._fed = None
                async for chunk in segment_chunks(segment):
                    if not self._chunks:
                        self.segments_in += 1
                    self._chunks.append(chunk)
                    target = self.attempt
                    if target is None or target.stopped:
                        continue
                    if self._fed is not target:
                        self._feed(target)
                    else:
                        target.input.write(chunk)
                if self._fed is not None and not self._fed.stopped:
                    self._fed.input.end()
                self._chunks = []
        finally:
            self.input_ended = True
        # The input is over: the runner drains, its output ends, and so does the stream.
        attempt = self.attempt
        if attempt is not None and not attempt.stopped:
            await attempt.input.aclose()
            await attempt.control.aclose()
        else:
            await self.finish("input ended")

    async def _relay_output(self, attempt: Attempt) -> None:
        async with contextlib.aclosing(attempt.output()) as segments:  # a cancel closes its subscription
            async for chunks in segments:
                wrote = False
                try:
                    async for chunk in chunks:
                        if not wrote:
                            self.output.begin()
                            wrote = True
                            attempt.segments_out += 1
                            self.segments_out += 1
                        self.output.write(chunk)
                        attempt.last_output = self.last_output = time.monotonic()
                finally:
                    if wrote:
                        self.output.end()
        # The runner closed its output channel.
        if self.input_ended:
            await self.finish("input ended")
        else:
            self._spawn_failover(attempt, "runner ended its output")

    async def _read_events(self, attempt: Attempt) -> None:
        storm = self.streams.config.live_error_storm
        async with contextlib.aclosing(attempt.events()) as segments:  # a cancel closes its subscription
            async for chunks in segments:
                data = b"".join([c async for c in chunks])
                if not data:
                    continue
                attempt.last_event = time.monotonic()
                try:
                    message = json.loads(data)
                except ValueError:
                    continue
                event = message.get("event", message) if isinstance(message, dict) else None
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                if kind == "status":
                    self.last_status = event
                if kind in ("error", "restart") or (kind == "status" and event.get("state") == "ERROR"):
                    now = time.monotonic()
                    attempt.errors.append(now)
                    while attempt.errors and now - attempt.errors[0] > 30.0:
                        attempt.errors.popleft()
                    if storm and len(attempt.errors) >= storm:
                        self._spawn_failover(attempt, f"{len(attempt.errors)} error/restart events in 30 s")

    async def _pay(self, attempt: Attempt) -> None:
        """Top up a paid session every `live_payment_interval` (payments.py): a live runner's
        through its client, an orchestrator's with `POST {transcoder}/payment` (go-livepeer's
        `SendPayment`); a failed top-up is logged, and the orchestrator's release shows in the
        watchdog."""
        while True:
            await asyncio.sleep(self.streams.config.live_payment_interval)
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    if attempt.session is not None:
                        await attempt.session.pay()
                    else:
                        await self._pay_orchestrator(attempt)
            except (LiveRunnerClientError, PaymentFailed, TimeoutError) as exc:
                log.warning("live %s: payment to %s failed: %s", self.name, attempt.backend.url, exc)

    async def _pay_orchestrator(self, attempt: Attempt) -> None:
        payer, http, info = attempt.orchestrator_payer, attempt.remote_http, attempt.backend.info
        assert payer is not None and http is not None and info is not None
        headers = await payer.top_up()
        try:
            async with http.post(info.transcoder + "/payment", headers=headers, data=b"") as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise PaymentFailed(f"/payment answered {resp.status}: {body[:200].decode(errors='replace').strip()}")
        except aiohttp.ClientError as exc:
            raise PaymentFailed(f"/payment: {exc or type(exc).__name__}") from None
        if body:
            payer.refreshed(body)

    async def _keepalive(self, attempt: Attempt) -> None:
        interval = self.streams.config.live_keepalive_interval
        while True:
            attempt.control.send(KEEPALIVE)
            await asyncio.sleep(interval)

    async def _watch(self, attempt: Attempt) -> None:
        cfg = self.streams.config
        http = self.streams.http
        timeout = aiohttp.ClientTimeout(total=max(0.5, cfg.live_health_interval * 2))
        while True:
            await asyncio.sleep(cfg.live_health_interval)
            now = time.monotonic()
            if attempt.last_output is None:
                if now - attempt.started > cfg.live_start_timeout and self.segments_in:
                    self._spawn_failover(attempt, f"no output {cfg.live_start_timeout:g} s after start")
                    return
            elif now - attempt.last_output > cfg.live_output_timeout and not self.input_ended:
                self._spawn_failover(attempt, f"no output segment for {cfg.live_output_timeout:g} s")
                return
            if now - attempt.last_event > EVENT_GAP:
                self._spawn_failover(attempt, "timeout waiting for events")
                return
            if attempt.remote_http is not None:
                continue  # an orchestrator: no health route; output and event timeouts (as go-livepeer)
            if attempt.session is not None:  # a live runner: its app, through the orchestrator's proxy
                try:
                    async with asyncio.timeout(timeout.total or 1.0):
                        await attempt.session.call("GET", "stream/status")
                    ok = True
                except (LiveRunnerClientError, TimeoutError):
                    ok = False
            else:
                try:
                    async with http.get(attempt.backend.url + "/health", timeout=timeout,
                                        headers=auth_headers(attempt.backend.config)) as resp:  # fmt: skip
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
            attempt.health_failures = 0 if ok else attempt.health_failures + 1
            if attempt.health_failures >= 2:
                self._spawn_failover(attempt, "runner health check failed")
                return

    def _spawn_failover(self, attempt: Attempt, reason: str) -> None:
        task = asyncio.create_task(self.failover(attempt, reason), name=f"live-failover-{self.name}")
        self.streams.background.add(task)
        task.add_done_callback(self.streams.background.discard)

    # -- figures -------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        now = time.monotonic()
        attempt = self.attempt
        since = round(now - self.last_output, 3) if self.last_output is not None else None
        age = max(now - self.created, 1e-6)
        return {
            "stream": self.name,
            "stream_id": self.stream_id,
            "pipeline": self.model_id,
            "runner": attempt.backend.url if attempt is not None and not attempt.stopped else None,
            "manifest_id": attempt.mid if attempt is not None else None,
            "swaps": self.swaps,
            "swap_log": self.swap_log,
            "seconds_since_output": since,
            "segments_in": self.segments_in,
            "segments_out": self.segments_out,
            "input_segments_per_s": round(self.segments_in / age, 3),
            "output_segments_per_s": round(self.segments_out / age, 3),
            "input_ended": self.input_ended,
            "ended": self.ended,
            "params": self.params,
        }

    def status(self) -> dict[str, Any]:
        """go-livepeer's `GET /live/video-to-video/{streamId}/status`: the last runner status
        event plus `gateway_status`."""
        out: dict[str, Any] = dict(self.last_status or {})
        gateway_status: dict[str, Any] = self.figures()
        if self.error is not None:
            gateway_status["error"] = self.error
        out["gateway_status"] = gateway_status
        return out


class LiveStreams:
    """Every live stream of the gateway."""

    def __init__(self, config: GatewayConfig, server: TrickleServer, discovery: Discovery, selector: Selector,
                 http: aiohttp.ClientSession, on_swap: Callable[[LiveStream], None] = lambda s: None,
                 on_suspend: Callable[[Backend], None] = lambda b: None) -> None:  # fmt: skip
        self.config = config
        self.server = server
        self.discovery = discovery
        self.selector = selector
        self.http = http
        self.on_swap = on_swap
        self.on_suspend = on_suspend
        self.streams: dict[str, LiveStream] = {}
        self.ended: dict[str, dict[str, Any]] = {}
        self.background: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> LiveStream | None:
        return self.streams.get(name)

    def find(self, stream_id: str) -> LiveStream | None:
        for s in self.streams.values():
            if s.stream_id == stream_id or s.name == stream_id:
                return s
        return None

    async def start(self, name: str, *, stream_id: str = "", model_id: str = "", params: dict[str, Any] | None = None,
                    trickle_base: str, orchestrator: str = "") -> LiveStream:  # fmt: skip
        old = self.streams.get(name)
        if old is not None:
            await old.finish("replaced by a new start")
        stream = LiveStream(self, name, stream_id or name, model_id or self.config.live_pipeline, dict(params or {}),
                            trickle_base, orchestrator)  # fmt: skip
        self.streams[name] = stream
        try:
            await stream.start()
        except BaseException:
            self.streams.pop(name, None)
            self.server.close_channel(name)
            self.server.close_channel(f"{name}-out")
            raise
        return stream

    def forget(self, stream: LiveStream) -> None:
        if self.streams.get(stream.name) is stream:
            del self.streams[stream.name]
        self.ended[stream.stream_id] = stream.status()

    async def close(self) -> None:
        for stream in list(self.streams.values()):
            await stream.finish("gateway stopping")
        for task in list(self.background):
            task.cancel()
