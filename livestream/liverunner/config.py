"""Live runner configuration and the wire shapes of go-livepeer's `POST /runners/heartbeat`.

See docs/orchestrator.md ("Live runner") and go-livepeer's `ai/runner/live_runner.go`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = [
    "HEALTH_PATH",
    "HEADER_ROUTE",
    "HEADER_SESSION_CONTROL",
    "HEADER_SESSION_ID",
    "HEADER_SESSION_TOKEN",
    "HeartbeatResponse",
    "LiveRunnerConfig",
    "PriceInfo",
    "RunnerStatus",
    "parse_go_duration",
]

#: The headers an orchestrator sets on every request it proxies to a live runner.
HEADER_ROUTE = "Livepeer-Runner-Route"
HEADER_SESSION_ID = "Livepeer-Session-Id"
HEADER_SESSION_TOKEN = "Livepeer-Session-Token"
HEADER_SESSION_CONTROL = "Livepeer-Session-Control"

RunnerStatus = Literal["unavailable", "ready"]
Mode = Literal["persistent", "single-shot"]
PriceUnit = Literal["hour", "720p", "fixed"]

#: The live-runner health check of a statically listed engine, under `runner_url`'s path: 200
#: while the app is `ready` (its pipeline loaded and working), 503 while it loads or is broken
#: (go-livepeer wants the exact `healthy_status_code`, 200 by default). Not ai-runner's `/health`,
#: which answers 200 with LOADING/IDLE/OK/ERROR in its body.
HEALTH_PATH = "/live-runner/health"

#: go-livepeer's limit on `metadata` (bytes of UTF-8).
MAX_METADATA_BYTES = 1024


@dataclass(frozen=True)
class PriceInfo:
    """What a session costs, in USD (converted to wei by the orchestrator's price feed, on chain)."""

    price: str
    currency: str = "usd"
    unit: PriceUnit = "hour"

    def to_json(self) -> dict[str, str]:
        return {"price": self.price, "currency": self.currency, "unit": self.unit}


@dataclass(frozen=True)
class LiveRunnerConfig:
    """One registration with one orchestrator: one app, one capacity (see docs/orchestrator.md).
    Without `orch_addr` the engine is listed statically (`-liveRunnerConfig`): it serves the
    sessions the orchestrator proxies here but never heartbeats."""

    #: The orchestrator's service URL, e.g. https://orch:8935 ("" for a static entry).
    orch_addr: str
    #: The orchestrator's `-orchSecret`: used only to bootstrap a registration.
    orch_secret: str
    #: Where the orchestrator reaches this engine; its path prefixes the app's routes.
    runner_url: str
    #: `pipeline/model`, e.g. live-video-to-video/streamdiffusion.
    app: str
    #: Live sessions this engine takes at once.
    capacity: int = 1
    mode: Mode = "persistent"
    #: A fixed runner id (the orchestrator generates one when empty).
    runner_id: str = ""
    label: str = ""
    version: str = ""
    metadata: str = ""
    price_info: PriceInfo | None = None
    #: Check the orchestrator's TLS certificate (go-livepeer's is self-signed by default).
    verify_tls: bool = False
    #: Backoff bounds (seconds) after a failed heartbeat.
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    #: Per-request timeout of heartbeats and callbacks.
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        urls = (("--orch-addr", self.orch_addr), ("--runner-url", self.runner_url))
        for name, url in urls if self.orch_addr else urls[1:]:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{name} must be an absolute http(s) URL with a host, got {url!r}.")
        if self.mode not in ("persistent", "single-shot"):
            raise ConfigError(f"mode must be persistent or single-shot, got {self.mode!r}.")
        if self.orch_addr and not self.orch_secret:
            raise ConfigError("--orch-addr needs --orch-secret (env ORCH_SECRET): the orchestrator's -orchSecret.")
        if not self.app or self.app != self.app.strip():
            raise ConfigError(f"--app must be a non-empty name without surrounding spaces, got {self.app!r}.")
        if self.capacity < 1:
            raise ConfigError(f"--capacity must be >= 1, got {self.capacity}.")
        if len(self.metadata.encode()) > MAX_METADATA_BYTES or "\ufffd" in self.metadata:
            raise ConfigError(f"runner metadata must be at most {MAX_METADATA_BYTES} bytes of UTF-8.")

    @property
    def static(self) -> bool:
        """Listed by the operator in `-liveRunnerConfig`: no registration, no heartbeats."""
        return not self.orch_addr

    @property
    def health_url(self) -> str:
        """The static entry's `health_url` (absolute; `HEALTH_PATH` under `runner_url`)."""
        return self.runner_url.rstrip("/") + HEALTH_PATH

    @property
    def pipeline(self) -> str:
        """The task part of `app` (`live-video-to-video`)."""
        return self.app.partition("/")[0]

    @property
    def model(self) -> str:
        """The model part of `app`: for live-video-to-video, the live pipeline's name."""
        return self.app.partition("/")[2]

    @property
    def route_prefix(self) -> str:
        """Where the app's routes are mounted: the path of `runner_url` (the orchestrator joins
        the client's app path onto it), without a trailing slash."""
        return urlsplit(self.runner_url).path.rstrip("/")

    def heartbeat_url(self) -> str:
        return f"{self.orch_addr.rstrip('/')}/runners/heartbeat"

    def heartbeat_body(
        self, *, runner_id: str, status: RunnerStatus, session_ids: list[str], gpu: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The complete registration: each heartbeat replaces every field at the orchestrator."""
        body: dict[str, Any] = {
            "runner_url": self.runner_url,
            "app": self.app,
            "mode": self.mode,
            "capacity": self.capacity,
            "status": status,
            "version": self.version,
            "metadata": self.metadata,
            "session_ids": session_ids,
        }
        if runner_id:
            body["runner_id"] = runner_id
        if self.label:
            body["label"] = self.label
        if gpu:
            body["gpu"] = dict(gpu)
        if self.price_info is not None:
            body["price_info"] = self.price_info.to_json()
        return body

    def static_entry(self) -> dict[str, Any]:
        """The entry an operator lists in go-livepeer's `-liveRunnerConfig` for this engine."""
        entry: dict[str, Any] = {
            "label": self.label or self.model.replace("/", "-") or "livestream",
            "app": self.app,
            "runner_url": self.runner_url,
            "mode": self.mode,
            "capacity": self.capacity,
            "health_url": self.health_url,
            "healthy_status_code": 200,
        }
        if self.price_info is not None:
            entry["price_info"] = self.price_info.to_json()
        return entry


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go `time.Duration` string such as `5s`, `1m30s`, `250ms`; ValueError otherwise."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    for match in _DURATION.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f"not a Go duration: {text!r}")
    return sign * total


@dataclass(frozen=True)
class HeartbeatResponse:
    """`LiveRunnerHeartbeatResponse`; `heartbeat_secret` and `o2r_url` only on a first registration."""

    runner_id: str
    orchestrator: str
    interval: float
    ttl: float
    session_ids: tuple[str, ...]
    heartbeat_secret: str | None = None
    o2r_url: str | None = None

    @classmethod
    def parse(cls, data: Any) -> HeartbeatResponse:
        if not isinstance(data, dict) or not isinstance(data.get("runner_id"), str) or not data["runner_id"]:
            raise ValueError(f"heartbeat response without a runner_id: {data!r}")
        o2r = data.get("o2r")
        o2r_url = o2r.get("url") if isinstance(o2r, dict) else None
        ids = data.get("session_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"heartbeat response session_ids is not a list of strings: {ids!r}")
        return cls(
            runner_id=data["runner_id"],
            orchestrator=str(data.get("orchestrator") or ""),
            interval=parse_go_duration(str(data.get("heartbeat_interval") or "5s")),
            ttl=parse_go_duration(str(data.get("heartbeat_ttl") or "20s")),
            session_ids=tuple(ids),
            heartbeat_secret=data.get("heartbeat_secret") or None,
            o2r_url=o2r_url if isinstance(o2r_url, str) and o2r_url else None,
        )
