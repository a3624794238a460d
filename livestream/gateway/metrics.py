"""`GET /metrics` of the gateway (Prometheus text): per runner requests, errors, latency,
suspensions and state. One `CollectorRegistry` per app."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .backends import Backend

__all__ = ["GatewayMetrics", "LiveCollector"]

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


class LiveCollector(Collector):
    """Per live stream: the runner serving it, time since its last output segment, segments."""

    def __init__(self, streams: Mapping[str, Any]) -> None:
        self.streams = streams  # name -> gateway.live.LiveStream

    def collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily("livestream_gateway_live_streams", "Live streams relayed now")
        runner = GaugeMetricFamily("livestream_gateway_live_runner", "1 for the runner serving the stream",
                                   labels=["stream", "backend"])  # fmt: skip
        since = GaugeMetricFamily("livestream_gateway_live_seconds_since_output",
                                  "Seconds since the stream's last output bytes", labels=["stream"])  # fmt: skip
        seg_in = GaugeMetricFamily("livestream_gateway_live_segments_in", "Input segments relayed", labels=["stream"])
        seg_out = GaugeMetricFamily("livestream_gateway_live_segments_out", "Output segments relayed", labels=["stream"])
        fps_in = GaugeMetricFamily("livestream_gateway_live_input_segments_per_second", "Input segments per second",
                                   labels=["stream"])  # fmt: skip
        fps_out = GaugeMetricFamily("livestream_gateway_live_output_segments_per_second", "Output segments per second",
                                    labels=["stream"])  # fmt: skip
        streams = list(self.streams.values())
        count.add_metric([], float(len(streams)))
        for s in streams:
            f = s.figures()
            if f["runner"]:
                runner.add_metric([s.name, f["runner"]], 1.0)
            if f["seconds_since_output"] is not None:
                since.add_metric([s.name], f["seconds_since_output"])
            seg_in.add_metric([s.name], float(f["segments_in"]))
            seg_out.add_metric([s.name], float(f["segments_out"]))
            fps_in.add_metric([s.name], f["input_segments_per_s"])
            fps_out.add_metric([s.name], f["output_segments_per_s"])
        yield from (count, runner, since, seg_in, seg_out, fps_in, fps_out)


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
        self.live_swaps = Counter(
            "livestream_gateway_live_swaps", "Runner swaps of a live stream", ["stream"], registry=self.registry
        )
        self.registry.register(_BackendCollector(backends))

    def render(self) -> bytes:
        return generate_latest(self.registry)
