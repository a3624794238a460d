"""The app's live sessions: start, replace, limit, list, stop, and `/health` in live mode.

Two kinds of session, one `Session` class: trickle sessions (`start`, the runner contract) and
direct sessions (`start_direct`: an RTMP or WHIP publisher hands in its `Ingest`; named by the
stream; no trickle channels; `configure` stores per-stream params and `rtmp_output`).

The `SessionManager` is opened and closed by the app's cleanup context (see `setup_live`),
owns one aiohttp `ClientSession` for every trickle client and one task per session, and on
shutdown ends each session gracefully (final event, channels closed) within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from typing import Any, Literal, Protocol

import aiohttp

from pipelines.errors import InvalidRequestError
from pipelines.live import LivePipelineRegistry, LivePipelineSpec, default_live_registry
from pipelines.live.aux_models import AuxModels
from pipelines.progress import Progress
from pipelines.url_guard import UrlRefusedError, checked_address

from ..egress import PacketSink
from ..egress.recording import RecordingError, Recordings
from ..errors import SessionLimitError, StreamBusyError
from ..settings import Settings
from .control import ControlError, validate_params
from .direct import DirectPreset, choose_live_pipeline, output_url
from ..ingest import Ingest
from .session import Session, SessionConfig, StartRequest

__all__ = ["LIVE_TASK", "DEFAULT_LIVE_PIPELINE", "SessionManager", "SinkFactory"]

log = logging.getLogger(__name__)

LIVE_TASK = "live-video-to-video"
#: go-livepeer's default live pipeline.
DEFAULT_LIVE_PIPELINE = "noop"
#: Sessions in a row that end because the pipeline is broken before `/health` says ERROR.
PIPELINE_FAILURES_FOR_ERROR = 3


class SinkFactory(Protocol):
    """A push output for a URL: `factory(url, request_keyframe, guarded=...)`; `guarded`: a
    stream client gave the URL, so each connect goes through the URL guard to the checked address."""

    def __call__(self, url: str, request_keyframe: Callable[[], None], /, *, guarded: bool = False) -> PacketSink: ...


HealthState = Literal["LOADING", "OK", "ERROR", "IDLE"]


class SessionManager:
    """Live sessions of one engine, keyed by stream id."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: LivePipelineRegistry | None = None,
        config: SessionConfig | None = None,
        output_sinks: Mapping[str, SinkFactory] | None = None,
    ) -> None:
        self.settings = settings
        #: URL scheme -> the sink that pushes a direct stream there (`livestream.protocols`).
        self.output_sinks = dict(output_sinks or {})
        #: Each live direct stream's push output, if any.
        self._pushes: dict[str, PacketSink] = {}
        aux = AuxModels(settings.aux_models) if settings.aux_models else AuxModels.from_env()
        self.registry = registry or default_live_registry(settings.model_dir, aux)
        self.config = config or SessionConfig()
        self.limit = settings.live_session_limit
        #: With `--pipeline`, a start beyond the limit replaces the oldest stream (ai-runner).
        self.replace_when_full = bool(settings.pipeline)
        self._sessions: dict[str, Session] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._http: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._preload: asyncio.Task[None] | None = None
        self._preload_error: str | None = None
        #: The preload's thread: a daemon, abandoned (logged) when its load outlives its bound.
        self._preload_thread: threading.Thread | None = None
        self._loading = False
        self._pipeline_failures = 0
        self._presets: dict[str, DirectPreset] = {}
        #: Recording outputs (`POST /live/{stream}/record`; every direct stream with `--record`).
        self.recordings = Recordings(settings.recordings_dir)
        self._direct_pipeline: str | None = None
        #: Why `direct_pipeline` is what it is ("no CUDA GPU, ..."), once resolved.
        self.direct_pipeline_reason = ""

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> SessionManager:
        # By default no certificate check, as ai-runner: go-livepeer serves trickle over HTTPS with a
        # self-signed certificate. `--trickle-verify-tls` turns the check on.
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.settings.trickle_verify_tls),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        if self.settings.pipeline == LIVE_TASK:
            self._loading = True
            self._preload = asyncio.create_task(self._check_pipeline(), name="live-preload")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _check_pipeline(self) -> None:
        """`--pipeline live-video-to-video`: load the pipeline once so `/health` can say ERROR.

        The load runs on a daemon thread of its own, awaited for at most the config's
        `pipeline_load_timeout`: past it `/health` says ERROR and the thread is abandoned (it
        closes what it loaded if it ever returns; `close()` logs it if it is still running).
        """
        timeout = self.config.pipeline_load_timeout
        try:
            spec = self.registry.get(self.pipeline_name(""))
            done: Future[None] = Future()
            progress = Progress(f"live pipeline {spec.name} (preload)")

            def _load() -> None:
                try:
                    pipeline = spec.factory()
                    if hasattr(pipeline, "progress"):  # its load, compile and warm-up, logged as they go
                        pipeline.progress = progress
                    if not pipeline.passthrough:
                        import torch  # noqa: F401  (seconds on first import: before IDLE, not in the first stream)
                    try:
                        pipeline.load(spec.params_model())
                    finally:
                        progress.close()
                        pipeline.close()
                except BaseException as exc:  # handed to the awaiting task
                    _settle(done, exc)
                else:
                    _settle(done)

            thread = self._preload_thread = threading.Thread(target=_load, name="live-preload", daemon=True)
            thread.start()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.wrap_future(done)
            except TimeoutError:
                self._preload_error = f"the live pipeline did not load within {timeout:g} s"
                log.error(
                    "live pipeline %s: load stuck for %g s on thread %s; /health says ERROR and the thread is "
                    "abandoned (a daemon: nothing waits on it, and it does not keep the process alive)",
                    spec.name,
                    timeout,
                    thread.name,
                )
        except Exception as exc:
            self._preload_error = f"{type(exc).__name__}: {exc}"
            log.error("live pipeline failed to load: %s", self._preload_error)
        finally:
            self._loading = False

    async def close(self) -> None:
        """End every session (final events, channels closed) within a bound. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._preload is not None:
            self._preload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preload  # bounded: cancelled, it only awaits its thread's future
        thread = self._preload_thread
        if thread is not None and thread.is_alive():
            log.error(
                "live pipeline preload thread %s is still loading at shutdown; it is abandoned "
                "(a daemon: it does not keep the process alive)",
                thread.name,
            )
        for session in list(self._sessions.values()):
            session.stop("engine shutting down")
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.stop_timeout + 5.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        if self._http is not None:
            await self._http.close()

    # --- health ---------------------------------------------------------------------------

    @property
    def health(self) -> HealthState:
        """ai-runner's mapping: IDLE without streams, OK streaming, ERROR only when the
        pipeline itself is broken (fails to load, or keeps failing stream after stream)."""
        if self._loading:
            return "LOADING"
        if self._preload_error is not None or self._pipeline_failures >= PIPELINE_FAILURES_FOR_ERROR:
            return "ERROR"
        return "OK" if self._sessions else "IDLE"

    def _pipeline_failed(self) -> None:
        self._pipeline_failures += 1

    # --- sessions -------------------------------------------------------------------------

    def pipeline_name(self, requested: str) -> str:
        if self.settings.pipeline == LIVE_TASK and self.settings.model_id:
            return self.settings.model_id
        return requested or DEFAULT_LIVE_PIPELINE

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def get(self, stream_id: str) -> Session | None:
        return self._sessions.get(stream_id)

    def ended_status(self, stream_id: str) -> dict[str, Any] | None:
        return self._ended.get(stream_id)

    def pipelines(self) -> list[LivePipelineSpec]:
        return list(self.registry)

    # --- direct streams (RTMP, WHIP) ------------------------------------------------------

    @property
    def direct_pipeline(self) -> str:
        """The pipeline of directly published streams (`--live-pipeline`, `auto` resolved once)."""
        if self._direct_pipeline is None:
            name, why = choose_live_pipeline(self.settings.live_pipeline, self.settings.model_dir)
            if name not in self.registry:
                raise InvalidRequestError(f"--live-pipeline {name!r} is not a live pipeline.")
            self._direct_pipeline = name
            self.direct_pipeline_reason = why
            log.info("direct streams run the %r live pipeline: %s (change it with --live-pipeline NAME)", name, why)
        return self._direct_pipeline

    def preset(self, stream: str) -> DirectPreset | None:
        return self._presets.get(stream)

    def direct_output(self, stream: str) -> str:
        """Where `stream`'s output is pushed over RTMP ("" for nowhere)."""
        return output_url(self._presets.get(stream), self.settings.rtmp_output, stream)

    async def start_direct(self, stream: str, ingest: Ingest) -> Session:
        """Start a session for a publisher (RTMP, WHIP) of `stream`.

        Raises `StreamBusyError` when that stream is already live (a second publisher is refused,
        the first keeps going), `SessionLimitError` when full, `InvalidRequestError` for bad params.
        """
        if self._closing or self._http is None:
            raise SessionLimitError("The engine is shutting down.")
        spec = self.registry.get(self.direct_pipeline)
        preset = self._presets.get(stream)
        merged = {**self.settings.live_params, **(preset.params if preset else {})}
        try:
            initial = validate_params(spec.params_model, merged)
        except ControlError as exc:
            raise InvalidRequestError(str(exc)) from None
        request = StartRequest(stream_id=stream, subscribe_url="", publish_url="", params=initial)
        async with self._lock:
            if stream in self._sessions:
                raise StreamBusyError(f"Stream {stream!r} is already being published.")
            if len(self._sessions) >= self.limit:
                raise SessionLimitError(
                    f"Live session limit reached ({self.limit}); stop a stream or raise --max-live-sessions."
                )
            session = Session(
                request, spec, self.config, self._http, on_pipeline_failure=self._pipeline_failed, ingest=ingest
            )
            self._sessions[stream] = session
            self._ended.pop(stream, None)
            self._tasks[stream] = asyncio.create_task(self._run(session), name=f"live-session-{stream}")
        url = self.direct_output(stream)
        if url:
            self._attach_push(session, url)
        if self.settings.record_direct:
            try:
                self.recordings.start(session)
            except RecordingError as exc:  # the stream goes on unrecorded
                session.report_error(str(exc))
        log.info("live stream %s started from %s: pipeline %s", stream, ingest.name, spec.name)
        return session

    def _attach_push(self, session: Session, url: str) -> None:
        preset = self._presets.get(session.stream_id)
        guarded = preset is not None and preset.rtmp_output == url and preset.rtmp_output_guarded
        scheme = url.split("://", 1)[0]
        factory = self.output_sinks.get(scheme)
        if factory is None:
            raise InvalidRequestError(f"No output protocol for {scheme}:// URLs; this engine pushes to {sorted(self.output_sinks)}.")
        sink = factory(url, session.request_keyframe, guarded=guarded)
        self._pushes[session.stream_id] = sink
        session.attach_sink(sink)

    async def configure(self, stream: str, body: Mapping[str, Any], *, trusted: bool = False) -> dict[str, Any]:
        """`POST /live/{stream}`: store params and `rtmp_output` for a direct stream; applied now
        when it is live, else when it starts publishing. Raises `InvalidRequestError`. A client's
        `rtmp_output` goes through the URL guard; `trusted` (the operator's auth webhook) skips it."""
        unknown = set(body) - {"params", "rtmp_output"}
        if unknown:
            raise InvalidRequestError(f"Unknown field(s) {sorted(unknown)}; expected params and/or rtmp_output.")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidRequestError("`params` must be a JSON object.")
        rtmp_output = body.get("rtmp_output")
        if rtmp_output is not None and (
            not isinstance(rtmp_output, str) or (rtmp_output and not rtmp_output.startswith("rtmp://"))
        ):
            raise InvalidRequestError(f'`rtmp_output` must be an rtmp:// URL, "" or null, got {rtmp_output!r}.')
        if rtmp_output and not trusted:
            # A client names where the engine pushes: the URL guard decides (private and
            # loopback targets refused unless the operator allows them).
            try:  # off the loop, bounded (a host that does not resolve in time is refused)
                await checked_address(rtmp_output, schemes=("rtmp", "rtmps"))
            except UrlRefusedError as exc:
                raise InvalidRequestError(f"`rtmp_output` refused: {exc}.") from None
        session = self._sessions.get(stream)
        spec = session.spec if session is not None else self.registry.get(self.direct_pipeline)
        preset = self._presets.get(stream) or DirectPreset()
        merged = {**preset.params, **params}
        try:
            validate_params(spec.params_model, {**self.settings.live_params, **merged})
        except ControlError as exc:
            raise InvalidRequestError(str(exc)) from None
        current = merged
        if session is not None:
            try:
                current = (session.patch_params(params) if params else session.params).model_dump()
            except ControlError as exc:
                raise InvalidRequestError(str(exc)) from None
        preset.params = merged
        if "rtmp_output" in body:
            preset.rtmp_output = rtmp_output
            preset.rtmp_output_guarded = not trusted
        self._presets[stream] = preset
        url = self.direct_output(stream)
        if session is not None and "rtmp_output" in body:
            old = self._pushes.pop(stream, None)
            if old is not None:
                await session.detach_sink(old)
            if url:
                self._attach_push(session, url)
        return {
            "stream_id": stream,
            "live": session is not None,
            "pipeline": spec.name,
            "params": current,
            "rtmp_output": url or None,
        }

    async def start(
        self,
        *,
        subscribe_url: str,
        publish_url: str,
        control_url: str = "",
        events_url: str = "",
        model_id: str = "",
        params: Mapping[str, Any] | None = None,
        stream_id: str = "",
        gateway_request_id: str = "",
        manifest_id: str = "",
    ) -> Session:
        """Start a session (replacing one with the same id); raises `InvalidRequestError`
        for a bad pipeline or params and `SessionLimitError` when full."""
        if self._closing or self._http is None:
            raise SessionLimitError("The engine is shutting down.")
        if not subscribe_url or not publish_url:
            raise InvalidRequestError("subscribe_url and publish_url are required.")
        spec = self.registry.get(self.pipeline_name(model_id))
        try:
            initial = validate_params(spec.params_model, params or {})
        except ControlError as exc:
            raise InvalidRequestError(str(exc)) from None
        sid = StartRequest.session_id(stream_id, gateway_request_id)
        request = StartRequest(
            stream_id=sid,
            subscribe_url=subscribe_url,
            publish_url=publish_url,
            control_url=control_url,
            events_url=events_url,
            params=initial,
            gateway_request_id=gateway_request_id,
            manifest_id=manifest_id,
        )
        async with self._lock:
            if sid in self._sessions:
                await self._stop(sid, "replaced by a new start for the same stream")
            while len(self._sessions) >= self.limit:
                if not self.replace_when_full:
                    raise SessionLimitError(
                        f"Live session limit reached ({self.limit}); stop a stream or raise --max-live-sessions."
                    )
                oldest = next(iter(self._sessions))
                await self._stop(oldest, "replaced by a new stream")
            session = Session(request, spec, self.config, self._http, on_pipeline_failure=self._pipeline_failed)
            self._sessions[sid] = session
            self._ended.pop(sid, None)
            self._tasks[sid] = asyncio.create_task(self._run(session), name=f"live-session-{sid}")
        log.info("live session %s started: pipeline %s", sid, spec.name)
        return session

    async def _run(self, session: Session) -> None:
        sid = session.stream_id
        try:
            async with session:
                await session.run()
            if session.error is None and session.frames_out:
                self._pipeline_failures = 0
        except Exception:
            log.exception("live session %s crashed", sid)
        finally:
            if self._sessions.get(sid) is session:
                del self._sessions[sid]
                self._tasks.pop(sid, None)
                self._pushes.pop(sid, None)
            self._ended[sid] = session.status(final=True, for_api=True)
            while len(self._ended) > 32:
                self._ended.popitem(last=False)

    async def stop(self, stream_id: str, reason: str = "stopped via API") -> dict[str, Any] | None:
        """Stop a session and wait for it to end; its final status, or None if unknown."""
        async with self._lock:
            if stream_id not in self._sessions:
                return None
            await self._stop(stream_id, reason)
        return self._ended.get(stream_id)

    async def _stop(self, stream_id: str, reason: str) -> None:
        session = self._sessions.get(stream_id)
        task = self._tasks.get(stream_id)
        if session is None or task is None:
            return
        session.stop(reason)
        done, _ = await asyncio.wait([task], timeout=self.config.stop_timeout + 5.0)
        if not done:
            task.cancel()
            await asyncio.wait([task], timeout=2.0)
        if self._sessions.get(stream_id) is session:
            del self._sessions[stream_id]
            self._tasks.pop(stream_id, None)


def _settle(future: Future[None], exc: BaseException | None = None) -> None:
    """Complete `future` unless its waiter already gave up on it (cancelled by `wrap_future`)."""
    with contextlib.suppress(InvalidStateError):  # cancelled: nobody is waiting for the result
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
