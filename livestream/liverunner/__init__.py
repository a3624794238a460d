"""go-livepeer Live Runner: this engine registers itself with an orchestrator and serves the
sessions it reserves and proxies here (docs/orchestrator.md, "Live runner").

    config.py        the registration's settings, the heartbeat payload, Go durations
    registration.py  bootstrap, heartbeats, recovery and backoff, unregister
    o2r.py           the orchestrator→runner channel (reserved/released events, keepalives)
    sessions.py      sessions started through the callbacks, stopped, reconciled
    callbacks.py     the runner→orchestrator session callbacks (channels, proxy, stop)
    routes.py        the app's routes behind the orchestrator's proxy
    client.py        a client of these sessions (discovery, reserve, app calls, stop)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from ..errors import ConfigError
from ..live import LIVE_MANAGER_KEY, SessionManager
from ..settings import Settings
from .config import LiveRunnerConfig, PriceInfo, RunnerStatus
from .registration import Registration
from .routes import add_runner_routes
from .sessions import RunnerSessions

__all__ = ["LIVE_RUNNER_CONFIG_KEY", "LIVE_RUNNER_KEY", "LiveRunner", "live_runner_config", "parse_price", "setup_live_runner"]

log = logging.getLogger(__name__)


def parse_price(text: str) -> PriceInfo:
    """`0.5` or `0.5/hour`, `0.001/720p`, `0.02/fixed`: USD per unit (the orchestrator converts)."""
    price, _, unit = text.partition("/")
    unit = unit.strip() or "hour"
    try:
        value = float(price)
    except ValueError:
        raise ConfigError(f"--runner-price expects PRICE[/hour|720p|fixed] in USD, got {text!r}.") from None
    if value <= 0 or unit not in ("hour", "720p", "fixed"):
        raise ConfigError(f"--runner-price expects a positive PRICE[/hour|720p|fixed] in USD, got {text!r}.")
    return PriceInfo(price=price.strip(), unit=unit)  # type: ignore[arg-type]


def live_runner_config(settings: Settings) -> LiveRunnerConfig | None:
    """The registration `settings` ask for (None without `orch_addr`); raises `ConfigError`."""
    if not settings.orch_addr:
        return None
    missing = [flag for flag, value in (("--runner-url", settings.runner_url), ("--app", settings.runner_app)) if not value]
    if missing:
        raise ConfigError(f"--orch-addr needs {' and '.join(missing)} (env RUNNER_URL, RUNNER_APP).")
    config = LiveRunnerConfig(
        orch_addr=settings.orch_addr,
        orch_secret=settings.orch_secret or "",
        runner_url=str(settings.runner_url),
        app=str(settings.runner_app),
        capacity=settings.runner_capacity or 1,
        runner_id=settings.runner_id or "",
        version=settings.version,
        metadata=settings.runner_metadata or "",
        price_info=parse_price(settings.runner_price) if settings.runner_price else None,
        verify_tls=settings.trickle_verify_tls,
    )
    if config.pipeline != "live-video-to-video" or not config.model:
        raise ConfigError(f"--app must be live-video-to-video/<live pipeline>, got {config.app!r}.")
    return config


class LiveRunner:
    """The registration and its sessions, for one app."""

    def __init__(self, config: LiveRunnerConfig, manager: SessionManager, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.manager = manager
        self.sessions = RunnerSessions(
            lambda: manager, http, pipeline=config.model, capacity=config.capacity, callback_timeout=config.request_timeout
        )
        self._gpu: Mapping[str, Any] | None = None
        self.registration = Registration(config, http, self.sessions, status=self.status, gpu=lambda: self._gpu)

    def status(self) -> RunnerStatus:
        """`ready` once the pipeline is loaded (health IDLE/OK); `unavailable` while it loads or is broken."""
        return "ready" if self.manager.health in ("IDLE", "OK") else "unavailable"

    async def probe_gpu(self) -> None:
        """The first GPU (NVML, else torch.cuda) as the heartbeat's `gpu`: `{id, name, vram_mb}`."""
        from ..api.hardware import HardwareInfo

        hardware = HardwareInfo()
        try:
            devices = await asyncio.to_thread(hardware.compute_info)
        finally:
            hardware.close()
        if devices:
            first = devices[min(devices)]
            self._gpu = {"id": first.id, "name": first.name, "vram_mb": int(first.memory_total) // 2**20}


#: The live runner, when `--orch-addr` is set.
LIVE_RUNNER_KEY = web.AppKey("live_runner", LiveRunner)
#: Optional override of the registration's config, set before the app starts (tests shorten backoffs).
LIVE_RUNNER_CONFIG_KEY = web.AppKey("live_runner_config", LiveRunnerConfig)


def setup_live_runner(app: web.Application, settings: Settings, config: LiveRunnerConfig | None = None) -> None:
    """With `--orch-addr`: mount the app's routes and register with the orchestrator for the app's
    lifetime (unregistering on shutdown). Call after `setup_live` (its manager must exist first)."""
    config = config or live_runner_config(settings)
    if config is None:
        return
    async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=(app.get(LIVE_RUNNER_CONFIG_KEY) or config).verify_tls), timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        runner = LiveRunner(app.get(LIVE_RUNNER_CONFIG_KEY) or config, app[LIVE_MANAGER_KEY], http)
        app[LIVE_RUNNER_KEY] = runner
        await runner.probe_gpu()
        task = asyncio.create_task(runner.registration.run(), name="liverunner-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runner.registration.close(unregister=True)
            await runner.sessions.close()
            await http.close()

    app.cleanup_ctx.append(runner_ctx)
    add_runner_routes(app, config.route_prefix, lambda request: request.app[LIVE_RUNNER_KEY].sessions)
