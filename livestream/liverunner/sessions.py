"""The orchestrator's sessions on this engine: start through the callbacks, stop, reconcile.

A session the orchestrator reserved becomes a live session here on the app's first start
request (`routes.py`). It ends when:
- the orchestrator releases it (an O2R `released` event, or its id missing from a heartbeat's
  authoritative `session_ids`: dropped events cannot leak a session);
- the client asks the app to stop it, or its input ends: the engine then calls `{control}/stop`
  so the orchestrator releases it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pipelines.errors import InvalidRequestError

from ..errors import SessionLimitError
from ..live import Session, SessionManager
from .callbacks import CallbackError, SessionChannel, SessionControl

__all__ = ["CHANNELS", "RunnerSession", "RunnerSessions"]

log = logging.getLogger(__name__)

#: The trickle channels of one session: (name, mime type). `in`/`out` carry MPEG-TS; the client
#: may publish JSON params on `control`; the engine publishes status events on `events`.
CHANNELS = (("in", "video/mp2t"), ("out", "video/mp2t"), ("control", "application/json"), ("events", "application/json"))


@dataclass
class RunnerSession:
    session_id: str
    control: SessionControl
    channels: dict[str, SessionChannel]
    session: Session
    #: `time.monotonic()` when the start request arrived (reconciliation skips newer sessions).
    started: float
    #: The `Livepeer-Session-Token` the orchestrator accepted when the channels were created;
    #: later requests of the session must carry the same one.
    token: str = field(default="", repr=False)
    #: The public WHEP playback URL (`POST {control}/proxy`), when there is one.
    whep_url: str | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    def authorized(self, token: str, control_url: str) -> bool:
        """Whether a request's session headers are those the orchestrator verified at start."""
        return hmac.compare_digest(token.encode(), self.token.encode()) and control_url.rstrip("/") == self.control.control_url

    def describe(self) -> dict[str, Any]:
        """The app's answer: the public channel URLs a client reads and writes."""
        urls = {name: channel.url for name, channel in self.channels.items()}
        return {
            "session_id": self.session_id,
            "pipeline": self.session.spec.name,
            "params": self.session.params.model_dump(),
            "input_url": urls.get("in"),
            "output_url": urls.get("out"),
            "control_url": urls.get("control"),
            "events_url": urls.get("events"),
            "whep_url": self.whep_url,
            "channels": {name: channel.public() for name, channel in self.channels.items()},
        }


class RunnerSessions:
    """Sessions the orchestrator proxied here, by its session id."""

    def __init__(
        self,
        manager: Callable[[], SessionManager],
        http: aiohttp.ClientSession,
        *,
        pipeline: str,
        capacity: int,
        callback_timeout: float = 10.0,
        whep_origin: str | None = None,
    ) -> None:
        self._manager = manager
        self._http = http
        self.pipeline = pipeline
        self.capacity = capacity
        self._timeout = callback_timeout
        #: `scheme://host:port` of `runner_url`: the WHEP proxy's target (None: no WHEP proxy).
        self.whep_origin = whep_origin.rstrip("/") if whep_origin else None
        self._sessions: dict[str, RunnerSession] = {}
        self._starting: dict[str, asyncio.Future[RunnerSession]] = {}
        self._closing = False

    def ids(self) -> list[str]:
        return list(self._sessions)

    def get(self, session_id: str) -> RunnerSession | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    async def start(
        self, session_id: str, control_url: str, token: str, params: Mapping[str, Any] | None
    ) -> tuple[RunnerSession, bool]:
        """Start session `session_id` (or return the running one); (session, created).

        Raises `SessionLimitError` (capacity, shutting down), `InvalidRequestError` (params) or
        `CallbackError` (the orchestrator refused the channels: unknown session or bad token)."""
        existing = self._sessions.get(session_id)
        if existing is not None:
            return existing, False
        pending = self._starting.get(session_id)
        if pending is not None:
            return await asyncio.shield(pending), False
        if self._closing:
            raise SessionLimitError("The engine is shutting down.")
        if len(self._sessions) + len(self._starting) >= self.capacity:
            raise SessionLimitError(f"This runner is at capacity ({self.capacity} live sessions).")
        future: asyncio.Future[RunnerSession] = asyncio.get_running_loop().create_future()
        self._starting[session_id] = future
        try:
            started = time.monotonic()
            control = SessionControl(self._http, control_url, token, timeout=self._timeout)
            channels = await control.create_channels(CHANNELS)
            try:
                session = await self._manager().start(
                    subscribe_url=channels["in"].internal_url,
                    publish_url=channels["out"].internal_url,
                    control_url=channels["control"].internal_url,
                    events_url=channels["events"].internal_url,
                    model_id=self.pipeline,
                    params=params,
                    stream_id=session_id,
                )
            except BaseException:
                # The orchestrator keeps the session (the client may start again); its channels go.
                await asyncio.shield(self._delete_channels(control, session_id, list(channels)))
                raise
            whep_url = await self._whep_proxy(control, session_id)
            entry = RunnerSession(session_id, control, channels, session, started, token=token, whep_url=whep_url)
            self._sessions[session_id] = entry
            entry.watcher = asyncio.create_task(self._watch(entry), name=f"liverunner-watch-{session_id}")
            future.set_result(entry)
            log.info("session %s started: pipeline %s, input %s", session_id, session.spec.name, channels["in"].url)
            return entry, True
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else SessionLimitError("start cancelled"))
            future.exception()  # retrieved: a concurrent waiter may not exist
            raise
        finally:
            self._starting.pop(session_id, None)

    async def _delete_channels(self, control: SessionControl, session_id: str, names: list[str]) -> None:
        try:
            await control.delete_channels(names)
        except CallbackError as exc:
            log.warning("session %s: deleting its channels after a failed start failed: %s", session_id, exc)

    async def _whep_proxy(self, control: SessionControl, session_id: str) -> str | None:
        """The session's WHEP playback as a public URL: `POST {control}/proxy` to this engine's
        `/live/{session_id}` (the orchestrator forwards `{url}/whep` there). None without one."""
        if self.whep_origin is None:
            return None
        try:
            _, url = await control.proxy(f"{self.whep_origin}/live/{session_id}")
        except CallbackError as exc:
            log.warning("session %s: no WHEP playback, the proxy callback failed: %s", session_id, exc)
            return None
        return f"{url.rstrip('/')}/whep"

    async def _watch(self, entry: RunnerSession) -> None:
        """The session ended here (input closed, failure): tell the orchestrator to release it."""
        await entry.session.wait_finished()
        if self._sessions.get(entry.session_id) is not entry:
            return  # stopped by the orchestrator (or by `stop`, which notifies it)
        del self._sessions[entry.session_id]
        log.info("session %s ended (%s); asking the orchestrator to release it", entry.session_id, entry.session.error or "input ended")
        await self._notify_stop(entry)

    async def _notify_stop(self, entry: RunnerSession) -> None:
        try:
            await entry.control.stop()
        except CallbackError as exc:
            log.warning("session %s: stop callback failed: %s", entry.session_id, exc)

    async def stop(self, session_id: str, reason: str, *, notify: bool) -> dict[str, Any] | None:
        """Stop a session; `notify` calls `{control}/stop` (the runner's own decision). Its final
        status, or None when unknown."""
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return None
        log.info("session %s: stopping (%s)", session_id, reason)
        final = await self._manager().stop(entry.session.stream_id, reason)
        if entry.watcher is not None:
            entry.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry.watcher
        if notify:
            await self._notify_stop(entry)
        return final

    async def released(self, session_id: str) -> None:
        """The orchestrator released the session (O2R event)."""
        await self.stop(session_id, "released by the orchestrator", notify=False)

    async def reconcile(self, active: Collection[str], *, before: float) -> list[str]:
        """Stop the sessions the orchestrator no longer has (`active`: a heartbeat's `session_ids`),
        among those started before `before` (the heartbeat's send time). The ids stopped."""
        gone = [sid for sid, entry in self._sessions.items() if sid not in active and entry.started < before]
        for sid in gone:
            log.warning("session %s is not in the orchestrator's session_ids: stopping it (a missed release)", sid)
            await self.stop(sid, "not among the orchestrator's sessions", notify=False)
        return gone

    async def close(self) -> None:
        """Stop every session (the orchestrator releases them on unregister). Idempotent."""
        self._closing = True
        for sid in list(self._sessions):
            await self.stop(sid, "engine shutting down", notify=False)
