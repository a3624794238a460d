"""Registration with a go-livepeer orchestrator: bootstrap, heartbeats, recovery, unregister.

    registration = Registration(config, http, sessions, status=..., gpu=...)
    task = asyncio.create_task(registration.run())
    ...
    await registration.close()      # stops beating and unregisters (SIGTERM drain)

The loop, as go-livepeer's code (not only its doc) requires:
- the first heartbeat carries `-orchSecret`; the answer's `heartbeat_secret` signs the next ones,
  at the interval the answer gives (parsed, never assumed), each with the complete payload;
- 401 or 404 on a later heartbeat: the orchestrator restarted or expired us; bootstrap again
  (a new secret and a new O2R channel);
- 401/404 on a bootstrap with a fixed `runner_id`: its old entry is still alive (< TTL) or not
  yet swept; back off and retry;
- 400: our payload was refused; logged with the orchestrator's reason, retried with backoff;
- no answer (or 5xx): exponential backoff; live sessions keep running; when the orchestrator is
  back the next heartbeat finds out whether it must bootstrap again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from .config import HeartbeatResponse, LiveRunnerConfig, RunnerStatus
from .o2r import O2RReader
from .sessions import RunnerSessions

__all__ = ["Registration"]

log = logging.getLogger(__name__)

#: How often the wait between heartbeats checks for a status change (unavailable → ready is sent at once).
_STATUS_POLL = 0.1


class Registration:
    """One runner registration with one orchestrator; see the module docstring."""

    def __init__(
        self,
        config: LiveRunnerConfig,
        http: aiohttp.ClientSession,
        sessions: RunnerSessions,
        *,
        status: Callable[[], RunnerStatus],
        gpu: Callable[[], Mapping[str, Any] | None] = lambda: None,
    ) -> None:
        self.config = config
        self._http = http
        self.sessions = sessions
        self._status = status
        self._gpu = gpu
        self.runner_id: str = config.runner_id
        self._secret: str | None = None
        self._o2r: O2RReader | None = None
        self._o2r_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        #: Set once the orchestrator acknowledged `status: ready`.
        self.ready = asyncio.Event()
        #: Figures for logs and tests.
        self.registrations = 0
        self.heartbeats = 0
        self.failures = 0
        self.last_error: str | None = None
        self.interval: float | None = None
        self.acknowledged_status: RunnerStatus | None = None

    @property
    def registered(self) -> bool:
        return self._secret is not None

    @property
    def o2r(self) -> O2RReader | None:
        return self._o2r

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.config.backoff_initial
        while not self._closed:
            delay = await self._beat()
            if delay is None:  # failed: back off
                self.failures += 1
                delay, backoff = backoff, min(backoff * 2, self.config.backoff_max)
            else:
                backoff = self.config.backoff_initial
            await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        """Sleep `delay`, or less when woken (O2R gone) or when the status to report changes."""
        deadline = time.monotonic() + delay
        self._wake.clear()
        while (remaining := deadline - time.monotonic()) > 0:
            if self.registered and self._status() != self.acknowledged_status:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, _STATUS_POLL)):
                    await self._wake.wait()
                    return

    async def _beat(self) -> float | None:
        """One heartbeat; the delay until the next, or None to back off."""
        config = self.config
        bootstrap = self._secret is None
        status = self._status()
        body = config.heartbeat_body(
            runner_id=self.runner_id, status=status, session_ids=self.sessions.ids(), gpu=self._gpu()
        )
        sent_at = time.monotonic()
        try:
            async with self._http.post(
                config.heartbeat_url(),
                json=body,
                headers={"Authorization": config.orch_secret if bootstrap else str(self._secret)},
                timeout=aiohttp.ClientTimeout(total=config.request_timeout),
            ) as response:
                code, text = response.status, (await response.text(errors="replace")).strip()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.last_error = f"unreachable: {exc!r}"
            log.warning(
                "orchestrator %s unreachable (%r); retrying with backoff, %d live session(s) keep running",
                config.orch_addr,
                exc,
                len(self.sessions),
            )
            return None
        if code == 200:
            return await self._accepted(text, bootstrap, status, sent_at)
        self.last_error = f"HTTP {code}: {text}"
        if code in (401, 404) and not bootstrap:
            log.warning(
                "heartbeat for %s refused (HTTP %d %s): the orchestrator restarted or expired this runner; registering again",
                self.runner_id,
                code,
                text,
            )
            await self._forget()
            return 0.0
        if code in (401, 404) and config.runner_id:
            log.warning(
                "registration as %s refused (HTTP %d %s): the id may still be held by an earlier registration "
                "(it expires 20 s after its last heartbeat); retrying with backoff",
                config.runner_id,
                code,
                text,
            )
        elif code in (401, 404):
            log.error(
                "registration refused by %s (HTTP %d %s): check --orch-secret (the orchestrator's -orchSecret) and "
                "that it runs with -useLiveRunners; retrying with backoff",
                config.orch_addr,
                code,
                text,
            )
        elif code == 400:
            log.error(
                "heartbeat rejected by %s (HTTP 400 %s): the orchestrator refuses this registration; fix the "
                "runner's settings (payload %s); retrying with backoff",
                config.orch_addr,
                text,
                json.dumps({k: v for k, v in body.items() if k != "session_ids"}),
            )
        else:
            log.warning("heartbeat to %s failed (HTTP %d %s); retrying with backoff", config.orch_addr, code, text)
        return None

    async def _accepted(self, text: str, bootstrap: bool, status: RunnerStatus, sent_at: float) -> float | None:
        try:
            answer = HeartbeatResponse.parse(json.loads(text))
        except ValueError as exc:
            self.last_error = f"bad answer: {exc}"
            log.error("heartbeat answer from %s not understood (%s); retrying with backoff", self.config.orch_addr, exc)
            return None
        if bootstrap:
            if answer.heartbeat_secret is None or answer.o2r_url is None:
                self.last_error = "registration answer without heartbeat_secret or o2r"
                log.error("registration answer from %s lacks heartbeat_secret or o2r; retrying", self.config.orch_addr)
                return None
            self._secret = answer.heartbeat_secret
            self.runner_id = answer.runner_id
            self.registrations += 1
            self._start_o2r(answer.o2r_url)
            log.info(
                "registered with %s as %s (app %s, capacity %d, heartbeat every %gs)",
                self.config.orch_addr,
                answer.runner_id,
                self.config.app,
                self.config.capacity,
                answer.interval,
            )
        self.heartbeats += 1
        self.interval = answer.interval
        self.last_error = None
        if status != self.acknowledged_status:
            log.info("runner %s is %s at %s", self.runner_id, status, self.config.orch_addr)
        self.acknowledged_status = status
        if status == "ready":
            self.ready.set()
        else:
            self.ready.clear()
        await self.sessions.reconcile(set(answer.session_ids), before=sent_at)
        return answer.interval

    # --- O2R ------------------------------------------------------------------------------

    def _start_o2r(self, url: str) -> None:
        reader = O2RReader(url, self._http, on_event=self._on_o2r_event, on_gone=lambda: self._o2r_gone(reader))
        self._o2r = reader
        self._o2r_task = asyncio.create_task(reader.run(), name=f"liverunner-o2r-{self.runner_id}")

    async def _on_o2r_event(self, message: dict[str, Any]) -> None:
        if message["event"] == "released":
            await self.sessions.released(message["session"])

    def _o2r_gone(self, reader: O2RReader) -> None:
        if reader is not self._o2r or self._closed:
            return
        log.warning("runner %s: the O2R channel is gone; registering again", self.runner_id)
        self._secret = None
        self.runner_id = self.config.runner_id
        self.acknowledged_status = None
        self._o2r = None
        self._o2r_task = None  # the reader's own task, ending now
        self._wake.set()

    async def _forget(self) -> None:
        """Drop the registration (secret, O2R) so the next heartbeat bootstraps."""
        self._secret = None
        self.runner_id = self.config.runner_id
        self.acknowledged_status = None
        self._o2r = None
        task, self._o2r_task = self._o2r_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- shutdown -------------------------------------------------------------------------

    async def unregister(self) -> bool:
        """`POST /runners/{id}/unregister`: the orchestrator releases our sessions and closes O2R."""
        if self._secret is None or not self.runner_id:
            return False
        url = f"{self.config.orch_addr.rstrip('/')}/runners/{self.runner_id}/unregister"
        try:
            async with self._http.post(
                url, headers={"Authorization": self._secret}, timeout=aiohttp.ClientTimeout(total=self.config.request_timeout)
            ) as response:
                text = (await response.text(errors="replace")).strip()
                if response.status in (200, 204):
                    log.info("unregistered %s from %s", self.runner_id, self.config.orch_addr)
                    return True
                log.warning("unregister %s: HTTP %d %s", self.runner_id, response.status, text)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("unregister %s failed: %r (the orchestrator expires it after its TTL)", self.runner_id, exc)
        return False

    async def close(self, *, unregister: bool = True) -> None:
        """Stop beating and reading O2R, then unregister. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if unregister:
            await self.unregister()
        await self._forget()
