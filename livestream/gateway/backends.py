"""Runner backends: what the gateway knows of each one, and the discovery loop that learns it.

Each round (every `refresh_interval` seconds) probes every runner at once: `GET /health`, then
`GET /hardware/info` (the pipeline and model a runner is pinned to, if any) and, when the runner
has just come up, `GET /openapi.json` (the pipelines it serves). A runner that does not answer is
`down` until a later round reaches it; no runner's state ever stops the gateway. Each round also
takes one step off every suspension (go-livepeer counts suspensions in refresh rounds too).

go-livepeer orchestrators (`orchestrator.py`) are backends too: a round calls GetOrchestrator
on one when its info is older than `orchestrator_refresh` or its auth token is due; its
capabilities, warm models and prices come from that `OrchestratorInfo`. One that needs payments
(on chain) is `needs payment`: listed, never selected, unless the gateway has a signer
(`payments.py`), which then signs GetOrchestrator and pays it. With `orchestrator_list` (a URL, as
go-livepeer's `-orchWebhookUrl`) the orchestrators it lists join, and those it no longer lists
leave, at each fetch (every `orchestrator_list_refresh` seconds, in the discovery round).

`min_runner_versions` (go-livepeer's `-aiMinRunnerVersion`): for a (pipeline, model) with a
minimum, a backend serves it only when it advertises a runner version at least that
(orchestrators: `ModelConstraint.runnerVersion` of the model; runners: `GET /version`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from packaging.version import InvalidVersion, Version

from ..payments.errors import PaymentError

from .config import GatewayConfig, RunnerConfig, parse_orchestrator_url
from .orchestrator import CertificateChanged, OrchestratorError, OrchestratorInfo, OrchestratorLink, Pins
from .payments import Payments

__all__ = ["Backend", "Discovery", "LatencyStat", "auth_headers"]

log = logging.getLogger(__name__)

State = Literal["unknown", "up", "down", "needs payment"]
Kind = Literal["runner", "orchestrator"]

#: Weight of the newest sample in a latency average.
_EWMA_ALPHA = 0.3


@dataclass
class LatencyStat:
    """Exponentially weighted seconds per request, for one (pipeline, model)."""

    seconds: float = 0.0
    samples: int = 0

    def add(self, seconds: float) -> None:
        self.seconds = seconds if self.samples == 0 else self.seconds + _EWMA_ALPHA * (seconds - self.seconds)
        self.samples += 1


@dataclass(eq=False)
class Backend:
    config: RunnerConfig
    kind: Kind = "runner"
    state: State = "unknown"
    health: str = ""
    #: Pipelines from the runner's OpenAPI document; None = not known (then it may serve any).
    pipelines: frozenset[str] | None = None
    #: Whether the runner serves the OpenAI-compatible `/v1/chat/completions`.
    openai: bool = False
    #: The (pipeline, model_id) the runner is pinned to (`/hardware/info`), like ai-runner containers.
    pinned: tuple[str, str] | None = None
    #: Models seen answering on this runner (pinned, or a successful request): the warm pool.
    warm: set[tuple[str, str]] = field(default_factory=set)
    latency: dict[tuple[str, str], LatencyStat] = field(default_factory=dict)
    in_flight: int = 0
    #: Refresh rounds left in the current suspension; 0 = not suspended.
    penalty: int = 0
    suspensions: int = 0
    last_error: str = ""
    last_seen: float = 0.0
    #: Orchestrators: the gRPC link, the last OrchestratorInfo, and a lock so that concurrent
    #: requests share one refresh of the auth token.
    link: OrchestratorLink | None = None
    info: OrchestratorInfo | None = None
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Came from `orchestrator_list` (leaves when the list no longer has it).
    listed: bool = False
    #: The runner's version (`GET /version`), fetched only when minimum versions are set.
    version: str = ""
    #: `"<pipeline>/<model_id>"` -> lowest runner version (GatewayConfig.min_runner_versions).
    min_versions: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def suspended(self) -> bool:
        return self.penalty > 0

    def runner_version(self, pipeline: str, model_id: str) -> str:
        if self.info is not None:
            return self.info.runner_version(pipeline, model_id)
        return self.version

    def version_ok(self, pipeline: str, model_id: str) -> bool:
        """go-livepeer's `-aiMinRunnerVersion`: no minimum for the model, or an advertised
        runner version at least it (none, or one that is not a version: skipped)."""
        minimum = self.min_versions.get(f"{pipeline}/{model_id}")
        if minimum is None:
            return True
        return _version_at_least(self.runner_version(pipeline, model_id), minimum)

    def serves(self, pipeline: str, model_id: str) -> bool:
        if self.state != "up":
            return False
        if self.min_versions and not self.version_ok(pipeline, model_id):
            return False
        if self.info is not None:
            if pipeline == "live-video-to-video":  # an orchestrator's live route is gateway part 3
                return False
            models = self.info.models(pipeline)
            return models is not None and (not models or not model_id or model_id in models)
        if self.pinned is not None:
            pinned_pipeline, pinned_model = self.pinned
            return pinned_pipeline == pipeline and (not model_id or model_id == pinned_model)
        return self.pipelines is None or pipeline in self.pipelines

    def is_warm(self, pipeline: str, model_id: str) -> bool:
        if self.info is not None and (self.info.models(pipeline) or {}).get(model_id):
            return True
        if not model_id:
            return any(p == pipeline for p, _ in self.warm)
        return (pipeline, model_id) in self.warm

    def suspend(self, penalty: int, reason: str) -> None:
        """Suspend for `penalty` more rounds; repeated failures add up, each round takes one off."""
        self.penalty += penalty
        self.suspensions += 1
        self.last_error = reason
        log.warning("runner %s suspended for %d rounds: %s", self.url, self.penalty, reason)

    def price(self, pipeline: str, model_id: str) -> float:
        """Per unit: the config's for a runner, the OrchestratorInfo's (wei) for an orchestrator."""
        if self.info is not None:
            return self.info.price(pipeline, model_id)
        return self.config.price(pipeline, model_id)

    def record_success(self, pipeline: str, model_id: str, seconds: float) -> None:
        self.latency.setdefault((pipeline, model_id), LatencyStat()).add(seconds)
        if model_id:
            self.warm.add((pipeline, model_id))

    def status(self) -> dict[str, Any]:
        """The `GET /backends` entry."""
        return {
            "url": self.url,
            "kind": self.kind,
            "state": self.state,
            "health": self.health,
            "pipelines": sorted(self.pipelines) if self.pipelines is not None else None,
            "openai": self.openai,
            "pinned": {"pipeline": self.pinned[0], "model_id": self.pinned[1]} if self.pinned else None,
            "warm_models": [{"pipeline": p, "model_id": m} for p, m in sorted(self.warm)],
            "latency_seconds": {f"{p}/{m}": round(st.seconds, 6) for (p, m), st in sorted(self.latency.items())},
            "in_flight": self.in_flight,
            "suspended": self.suspended,
            "penalty": self.penalty,
            "suspensions": self.suspensions,
            "last_error": self.last_error,
            "prices": dict(self.config.prices),
            "runner_version": self.version or None,
            "listed": self.listed,
            "orchestrator": self.info.status() if self.info is not None else None,
        }


def _version_at_least(version: str, minimum: str) -> bool:
    try:
        return Version(version.strip()) >= Version(minimum)
    except InvalidVersion:
        return False


def parse_orchestrator_list(body: str) -> list[str]:
    """An orchestrator list: JSON `["https://o:8935", ...]`, JSON `[{"address": "https://o:8935"}, ...]`
    (go-livepeer's `-orchWebhookUrl`), or one URL a line (`#` comments). Raises ValueError."""
    text = body.strip()
    if text.startswith(("[", "{")):
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("orchestrators"), list):
            data = data["orchestrators"]
        if not isinstance(data, list):
            raise ValueError("expected a JSON list")
        urls = [item.get("address") if isinstance(item, dict) else item for item in data]
        if not all(isinstance(u, str) for u in urls):
            raise ValueError('expected a list of URLs or of {"address": URL}')
        return [str(u).strip() for u in urls if str(u).strip()]
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def auth_headers(config: RunnerConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"} if config.token else {}


async def _get_json(session: aiohttp.ClientSession, url: str, timeout: float, headers: dict[str, str]) -> Any:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), headers=headers) as resp:
        if resp.status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=resp.reason or "")
        return await resp.json(content_type=None)


def _pipelines_of(spec: Any) -> tuple[frozenset[str], bool]:
    paths = spec.get("paths", {}) if isinstance(spec, dict) else {}
    pipelines = frozenset(p.strip("/") for p, item in paths.items() if isinstance(item, dict) and "post" in item)
    return pipelines, "/v1/chat/completions" in paths


class Discovery:
    """The backends and the loop that keeps their state fresh."""

    def __init__(self, config: GatewayConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.pins = Pins(config.state_dir / "pins.json" if config.state_dir is not None else None)
        #: Payments to on-chain orchestrators; None without a signer.
        self.payments = Payments.from_config(config, session)
        versions = dict(config.min_runner_versions)
        self.backends: list[Backend] = [Backend(config=r, min_versions=versions) for r in config.runners]
        for url in config.orchestrators:
            self.backends.append(self._orchestrator(url))
        self.rounds = 0
        self._first_round = asyncio.Event()
        self._list_due = 0.0
        #: The last fetch of `orchestrator_list`: its error, or "" when it was read.
        self.list_error = ""

    def _orchestrator(self, url: str, listed: bool = False) -> Backend:
        link = OrchestratorLink(url, self.pins, self.config.probe_timeout)
        return Backend(config=RunnerConfig(url=url), kind="orchestrator", link=link, listed=listed,
                       min_versions=dict(self.config.min_runner_versions))  # fmt: skip

    async def refresh_list(self) -> None:
        """Fetch `orchestrator_list`: new orchestrators join, listed ones no longer there leave
        (a request already on one finishes). A failed fetch keeps the last list."""
        url = self.config.orchestrator_list
        if not url:
            return
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=self.config.probe_timeout)) as resp:
                if resp.status != 200:
                    raise ValueError(f"answered {resp.status}")
                urls = parse_orchestrator_list(await resp.text())
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, UnicodeDecodeError) as exc:
            reason = str(exc) or type(exc).__name__
            if reason != self.list_error:
                log.warning("orchestrator list %s: %s (keeping the last one)", url, reason)
            self.list_error = reason
            return
        self.list_error = ""
        wanted: list[str] = []
        for item in urls:
            try:
                parse_orchestrator_url(item)
            except ValueError as exc:
                log.warning("orchestrator list %s: %s: skipped", url, exc)
                continue
            if item.rstrip("/") not in wanted:
                wanted.append(item.rstrip("/"))
        present = {b.url for b in self.backends}
        for b in [b for b in self.backends if b.listed and b.url not in wanted]:
            log.info("orchestrator %s left the list", b.url)
            self.backends.remove(b)
            if b.link is not None:
                b.link.close()
        for item in wanted:
            if item not in present:
                log.info("orchestrator %s joined from the list", item)
                self.backends.append(self._orchestrator(item, listed=True))

    async def probe_orchestrator(self, backend: Backend, *, force: bool = False) -> None:
        """GetOrchestrator, unless the last info is fresh and its token not due (or `force`)."""
        assert backend.link is not None
        info = backend.info
        if (not force and info is not None and backend.state in ("up", "needs payment") and not info.token_due()
                and time.time() - info.fetched < self.config.orchestrator_refresh):  # fmt: skip
            return
        try:
            info = await backend.link.get_info(await self.payments.orchestrator_request() if self.payments else None)
        except (OrchestratorError, OSError, asyncio.TimeoutError, PaymentError) as exc:
            reason = str(exc) or type(exc).__name__
            if backend.state != "down" or backend.last_error != reason:
                log.log(logging.ERROR if isinstance(exc, CertificateChanged) else logging.WARNING,
                        "orchestrator %s is down: %s", backend.url, reason)  # fmt: skip
            backend.state = "down"
            backend.last_error = reason
            backend.info = None
            backend.pipelines = None
            return
        state: State = "needs payment" if info.needs_payment and self.payments is None else "up"
        if backend.state != state:
            log.info("orchestrator %s is %s (%s)", backend.url, state, info.transcoder)
        backend.info = info
        backend.state = state
        backend.pipelines = frozenset(info.pipelines())
        backend.last_seen = time.time()

    async def refresh_token(self, backend: Backend, older_than: float | None = None) -> None:
        """A fresh auth token before a job: when due, or (after a 403) fetched before
        `older_than`. Concurrent callers share one GetOrchestrator."""
        async with backend.refreshing:
            info = backend.info
            stale = info is None or info.token_due() or (older_than is not None and info.fetched < older_than)
            if stale:
                await self.probe_orchestrator(backend, force=True)
                if older_than is not None and backend.info is not None:
                    backend.info.after_refusal = True

    async def probe(self, backend: Backend) -> None:
        if backend.link is not None:
            await self.probe_orchestrator(backend)
            return
        timeout = self.config.probe_timeout
        headers = auth_headers(backend.config)
        try:
            health = await _get_json(self.session, f"{backend.url}/health", timeout, headers)
            backend.health = str(health.get("status", "")) if isinstance(health, dict) else ""
            info = await _get_json(self.session, f"{backend.url}/hardware/info", timeout, headers)
            pipeline = str(info.get("pipeline") or "") if isinstance(info, dict) else ""
            model_id = str(info.get("model_id") or "") if isinstance(info, dict) else ""
            backend.pinned = (pipeline, model_id) if pipeline and model_id else None
            if backend.pinned is not None:
                backend.warm.add(backend.pinned)
            if backend.min_versions and (backend.state != "up" or not backend.version):
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    version = await _get_json(self.session, f"{backend.url}/version", timeout, headers)
                    backend.version = str(version.get("version") or "") if isinstance(version, dict) else ""
            if backend.state != "up" or backend.pipelines is None:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    spec = await _get_json(self.session, f"{backend.url}/openapi.json", timeout, headers)
                    backend.pipelines, backend.openai = _pipelines_of(spec)
                if not backend.openai:  # our engine serves /v1 without listing it in its spec
                    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                        await _get_json(self.session, f"{backend.url}/v1/models", timeout, headers)
                        backend.openai = True
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError) as exc:
            if backend.state != "down":
                log.warning("runner %s is down: %s", backend.url, exc or type(exc).__name__)
            backend.state = "down"
            backend.version = ""
            backend.health = ""
            backend.pipelines = None
            return
        if backend.state != "up":
            log.info("runner %s is up (%s)", backend.url, backend.health)
        backend.state = "up"
        backend.last_seen = time.time()

    async def refresh(self) -> None:
        """One discovery round: the orchestrator list when due, probe every backend, then decay
        every suspension by one."""
        if self.config.orchestrator_list and time.monotonic() >= self._list_due:
            self._list_due = time.monotonic() + self.config.orchestrator_list_refresh
            await self.refresh_list()
        await asyncio.gather(*(self.probe(b) for b in self.backends))
        for b in self.backends:
            if b.penalty > 0:
                b.penalty -= 1
        self.rounds += 1
        self._first_round.set()

    async def wait_first_round(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first_round.wait(), timeout)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug in one round must not end discovery
                log.exception("discovery round failed")
            await asyncio.sleep(self.config.refresh_interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Discovery]:
        task = asyncio.create_task(self.run(), name="gateway-discovery")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for b in self.backends:
                if b.link is not None:
                    b.link.close()

    def up(self) -> Iterable[Backend]:
        return (b for b in self.backends if b.state == "up")
