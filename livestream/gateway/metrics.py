"""`GET /metrics` of the gateway (Prometheus text): per runner requests, errors, latency,
suspensions and state. One `CollectorRegistry` per app."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .backends import Backend

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _BackendCollector(Collector):
    def __init__(self, backends: Iterable[Backend]) -> None:
        # The discovery's own list when given one: orchestrators from a list URL come and go.
        self.backends = backends if isinstance(backends, list) else list(backends)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("livestream_gateway_backend_up", "1 if the runner answered the last probe", labels=["backend"])
        suspended = GaugeMetricFamily("livestream_gateway_backend_suspended", "1 while the runner is suspended", labels=["backend"])
        penalty = GaugeMetricFamily("livestream_gateway_backend_penalty", "Refresh rounds of suspension left", labels=["backend"])
        in_flight = GaugeMetricFamily("livestream_gateway_backend_in_flight", "Requests in flight", labels=["backend"])
        for b in self.backends:
            up.add_metric([b.url], 1.0 if b.state == "up" else 0.0)
            suspended.add_metric([b.url], 1.0 if b.suspended else 0.0)
            penalty.add_metric([b.url], float(b.penalty))
            in_flight.add_metric([b.url], float(b.in_flight))
        yield from (up, suspended, penalty, in_flight)


class GatewayMetrics:
    def __init__(self, backends: Iterable[Backend]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "livestream_gateway_backend_requests", "Tries sent to a runner, by outcome",
            ["backend", "pipeline", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "livestream_gateway_backend_latency_seconds", "Seconds of a successful try on a runner",
            ["backend", "pipeline"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.suspensions = Counter(
            "livestream_gateway_backend_suspensions", "Suspensions of a runner", ["backend"], registry=self.registry
        )
        self.client_requests = Counter(
            "livestream_gateway_requests", "Client requests, by route and status", ["route", "status"], registry=self.registry
        )
        self.registry.register(_BackendCollector(backends))

    def render(self) -> bytes:
        return generate_latest(self.registry)
