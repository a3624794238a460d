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
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ..errors import ConfigError
from ..live import LIVE_MANAGER_KEY, SessionManager
from ..settings import Settings
from .config import HEALTH_PATH, LiveRunnerConfig, Mode, PriceInfo, RunnerStatus
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


def _default_runner_url(settings: Settings) -> str:
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else socket.gethostname()
    return f"http://{host}:{settings.port}"


def live_runner_config(settings: Settings) -> LiveRunnerConfig | None:
    """The live runner `settings` ask for (None without `--app`); raises `ConfigError`.

    `--orch-addr` registers dynamically. `--app` without `--orch-addr` is a statically listed
    runner (go-livepeer's `-liveRunnerConfig`): the same app routes, `HEALTH_PATH` for the
    orchestrator's health check, no heartbeats; `--runner-url` then only names the routes' prefix
    (and the entry the engine logs), defaulting to this host and port.

    A `live-video-to-video/<live pipeline>` app is `persistent` (a reserved session, a stream); a
    batch app (`text-to-image/<model>`, any batch task) is `single-shot`: each proxied request is
    one session, served by the engine's batch route of the same path."""
    if not settings.orch_addr and not settings.runner_app:
        return None
    if settings.orch_addr:
        missing = [flag for flag, value in (("--runner-url", settings.runner_url), ("--app", settings.runner_app)) if not value]
        if missing:
            raise ConfigError(f"--orch-addr needs {' and '.join(missing)} (env RUNNER_URL, RUNNER_APP).")
    from pipelines.registry import BATCH_TASKS

    app = str(settings.runner_app)
    task, _, model = app.partition("/")
    if task == "live-video-to-video" and model:
        mode: Mode = "persistent"
    elif task in BATCH_TASKS and model:
        mode = "single-shot"
    else:
        raise ConfigError(
            f"--app must be live-video-to-video/<live pipeline> or <batch task>/<model id> (single-shot), got {app!r}."
        )
    config = LiveRunnerConfig(
        orch_addr=settings.orch_addr or "",
        orch_secret=settings.orch_secret or "",
        runner_url=str(settings.runner_url or _default_runner_url(settings)),
        app=app,
        capacity=settings.runner_capacity or 1,
        mode=mode,
        runner_id=settings.runner_id or "",
        version=settings.version,
        metadata=settings.runner_metadata or "",
        price_info=parse_price(settings.runner_price) if settings.runner_price else None,
        verify_tls=settings.trickle_verify_tls,
    )
    if mode == "single-shot" and config.route_prefix:
        raise ConfigError(
            f"--app {app} is a batch app, served by the engine's own /{task} route: --runner-url must have no path, "
            f"got {config.runner_url!r}."
        )
    return config


class LiveRunner:
    """The registration and its sessions, for one app."""

    def __init__(
        self,
        config: LiveRunnerConfig,
        manager: SessionManager,
        http: aiohttp.ClientSession,
        health: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self._health = health or (lambda: manager.health)
        parts = urlsplit(config.runner_url)
        self.sessions = RunnerSessions(
            lambda: manager,
            http,
            pipeline=config.model,
            capacity=config.capacity,
            callback_timeout=config.request_timeout,
            whep_origin=f"{parts.scheme}://{parts.netloc}" if config.mode == "persistent" else None,
        )
        self._gpu: Mapping[str, Any] | None = None
        self.registration = Registration(config, http, self.sessions, status=self.status, gpu=lambda: self._gpu)

    def status(self) -> RunnerStatus:
        """`ready` once the pipeline is loaded (health IDLE/OK); `unavailable` while it loads or is broken."""
        try:
            health = self._health()
        except Exception:
            log.exception("live runner health failed; reporting unavailable")
            return "unavailable"
        return "ready" if health in ("IDLE", "OK") else "unavailable"

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


#: The live runner, when `--app` is set (registered with `--orch-addr`, else statically listed).
LIVE_RUNNER_KEY = web.AppKey("live_runner", LiveRunner)
#: Optional override of the registration's config, set before the app starts (tests shorten backoffs).
LIVE_RUNNER_CONFIG_KEY = web.AppKey("live_runner_config", LiveRunnerConfig)


def setup_live_runner(app: web.Application, settings: Settings, config: LiveRunnerConfig | None = None) -> None:
    """With `--app`: mount the app's routes and `HEALTH_PATH`; with `--orch-addr` also register with
    the orchestrator for the app's lifetime (unregistering on shutdown). Call after `setup_live`
    (its manager must exist first)."""
    config = config or live_runner_config(settings)
    if config is None:
        return

    async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app.get(LIVE_RUNNER_CONFIG_KEY) or config
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=cfg.verify_tls), timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        health: Callable[[], str] | None = None
        if cfg.mode == "single-shot":
            from ..api.health import health_status

            health = lambda: health_status(app, settings)  # noqa: E731
        runner = LiveRunner(cfg, app[LIVE_MANAGER_KEY], http, health)
        app[LIVE_RUNNER_KEY] = runner
        task: asyncio.Task[None] | None = None
        if cfg.static:
            log.info(
                "live runner for a static -liveRunnerConfig entry (health check %s): %s",
                cfg.health_url,
                json.dumps({"runners": [cfg.static_entry()]}),
            )
        else:
            await runner.probe_gpu()
            task = asyncio.create_task(runner.registration.run(), name="liverunner-heartbeat")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await runner.registration.close(unregister=True)
            await runner.sessions.close()
            await http.close()

    async def runner_health(request: web.Request) -> web.Response:
        runner = request.app[LIVE_RUNNER_KEY]
        status = runner.status()
        return web.json_response({"status": status, "app": runner.config.app}, status=200 if status == "ready" else 503)

    app.cleanup_ctx.append(runner_ctx)
    app.router.add_get(config.route_prefix + HEALTH_PATH, runner_health)
    if config.mode == "persistent":
        add_runner_routes(app, config.route_prefix, lambda request: request.app[LIVE_RUNNER_KEY].sessions)
