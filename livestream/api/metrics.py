"""`GET /metrics`: Prometheus text format, as ai-runner exposes it (no auth, not in the schema).

One `CollectorRegistry` per app (no process-wide state), holding:

- request figures from a middleware: `livestream_http_requests_total{method,route,status}`,
  `livestream_http_request_duration_seconds{method,route}` (route = the matched route
  template, so labels stay bounded) and `livestream_http_requests_in_flight`;
- a scrape-time snapshot of the engine: health (one-hot over LOADING/OK/IDLE/ERROR), the
  batch registry per (task, model id) (loaded, loading, running, queued, load seconds), live
  sessions (count, limit, and per stream fps in/out, frames, drops, queue depth, restarts), and
  per GPU memory and utilization (NVML, else torch.cuda; nothing without a GPU);
- ai-runner's `version{app,version} 1` gauge and the process collector (CPU, memory, fds).

The snapshot is taken on the event loop (the registry and sessions are loop objects); GPU
figures come from a worker thread (NVML calls block), then the text is rendered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..keys import REGISTRY_KEY
from ..live import LIVE_MANAGER_KEY
from ..settings import Settings
from .hardware import HardwareInfo
from .health import health_status_or_error

__all__ = ["METRICS_KEY", "EngineMetrics", "setup_metrics"]

#: Request latency buckets (seconds): trickle long-polls and video jobs run long.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, float("inf"))
HEALTH_STATES = ("LOADING", "OK", "IDLE", "ERROR")
#: The classic text format every Prometheus version parses (our names need no escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    """Yields the figures of the last snapshot (set by the `/metrics` handler before rendering)."""

    def __init__(self) -> None:
        self.health: str | None = None
        self.models: list[dict[str, Any]] = []
        self.live: dict[str, Any] | None = None
        self.gpus: dict[int, Any] = {}

    def collect(self) -> Iterator[Metric]:
        if self.health is not None:
            health = GaugeMetricFamily("livestream_health", "1 for the current /health status", labels=["status"])
            for state in HEALTH_STATES:
                health.add_metric([state], 1.0 if state == self.health else 0.0)
            yield health
        yield from self._model_metrics()
        yield from self._live_metrics()
        yield from self._gpu_metrics()

    def _model_metrics(self) -> Iterator[Metric]:
        labels = ["task", "model_id"]
        loaded = GaugeMetricFamily("livestream_model_loaded", "1 when the model is loaded", labels=labels)
        loading = GaugeMetricFamily("livestream_model_loading", "1 while the model loads", labels=labels)
        busy = GaugeMetricFamily("livestream_model_busy", "jobs running on the model (0 or 1)", labels=labels)
        queued = GaugeMetricFamily("livestream_model_queue_depth", "requests waiting for the model", labels=labels)
        load_s = GaugeMetricFamily("livestream_model_load_seconds", "seconds the model's last load took", labels=labels)
        for row in self.models:
            key = [row["task"], row["model_id"]]
            loaded.add_metric(key, float(row["loaded"]))
            loading.add_metric(key, float(row["loading"]))
            busy.add_metric(key, float(row["busy"]))
            queued.add_metric(key, float(row["queued"]))
            if row.get("load_seconds") is not None:
                load_s.add_metric(key, float(row["load_seconds"]))
        yield GaugeMetricFamily(
            "livestream_models_loaded", "batch models loaded", value=float(sum(r["loaded"] for r in self.models))
        )
        yield from (loaded, loading, busy, queued, load_s)

    def _live_metrics(self) -> Iterator[Metric]:
        if self.live is None:
            return
        sessions = self.live["sessions"]
        yield GaugeMetricFamily("livestream_live_sessions", "live sessions running", value=float(len(sessions)))
        yield GaugeMetricFamily("livestream_live_session_limit", "live sessions allowed", value=float(self.live["limit"]))
        labels = ["stream_id", "pipeline"]
        gauges = {
            "input_fps": GaugeMetricFamily("livestream_live_input_fps", "decoded input frames per second", labels=labels),
            "output_fps": GaugeMetricFamily("livestream_live_output_fps", "encoded output frames per second", labels=labels),
            "queue_depth": GaugeMetricFamily("livestream_live_queue_depth", "frames waiting for the pipeline", labels=labels),
        }
        counters = {
            "frames_in": CounterMetricFamily("livestream_live_frames_in", "frames decoded", labels=labels),
            "frames_out": CounterMetricFamily("livestream_live_frames_out", "frames encoded", labels=labels),
            "dropped_frames": CounterMetricFamily(
                "livestream_live_dropped_frames", "frames dropped before the pipeline (late or queue full)", labels=labels
            ),
            "restart_count": CounterMetricFamily("livestream_live_restarts", "pipeline restarts", labels=labels),
        }
        for st in sessions:
            key = [str(st.get("stream_id", "")), str(st.get("pipeline", ""))]
            gauges["input_fps"].add_metric(key, float(st.get("input_status", {}).get("fps") or 0.0))
            gauges["output_fps"].add_metric(key, float(st.get("inference_status", {}).get("fps") or 0.0))
            gauges["queue_depth"].add_metric(key, float(st.get("queue_depth") or 0))
            counters["frames_in"].add_metric(key, float(st.get("frames_in") or 0))
            counters["frames_out"].add_metric(key, float(st.get("frames_out") or 0))
            counters["dropped_frames"].add_metric(key, float(st.get("dropped_frames") or 0))
            counters["restart_count"].add_metric(key, float(st.get("inference_status", {}).get("restart_count") or 0))
        yield from gauges.values()
        yield from counters.values()

    def _gpu_metrics(self) -> Iterator[Metric]:
        if not self.gpus:
            return
        labels = ["gpu", "uuid", "name"]
        total = GaugeMetricFamily("livestream_gpu_memory_total_bytes", "GPU memory", labels=labels)
        free = GaugeMetricFamily("livestream_gpu_memory_free_bytes", "GPU memory free", labels=labels)
        used = GaugeMetricFamily("livestream_gpu_memory_used_bytes", "GPU memory in use", labels=labels)
        compute = GaugeMetricFamily("livestream_gpu_utilization_compute_percent", "GPU compute utilization", labels=labels)
        memory = GaugeMetricFamily("livestream_gpu_utilization_memory_percent", "GPU memory bandwidth utilization", labels=labels)
        for index, gpu in sorted(self.gpus.items()):
            key = [str(index), gpu.id, gpu.name]
            total.add_metric(key, float(gpu.memory_total))
            free.add_metric(key, float(gpu.memory_free))
            used.add_metric(key, float(gpu.memory_total - gpu.memory_free))
            compute.add_metric(key, float(gpu.utilization_compute))
            memory.add_metric(key, float(gpu.utilization_memory))
        yield from (total, free, used, compute, memory)


class EngineMetrics:
    """The app's Prometheus registry, its request middleware and the `/metrics` handler."""

    def __init__(self, settings: Settings, hardware: HardwareInfo) -> None:
        self.settings = settings
        self.hardware = hardware
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "livestream_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "livestream_http_request_duration_seconds",
            "HTTP request handling time (until the handler returned; streams included)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("livestream_http_requests_in_flight", "HTTP requests being handled", registry=self.registry)
        # ai-runner's gauge, so dashboards built for it find the runner version.
        Gauge("version", "Runner version", ["app", "version"], registry=self.registry).labels(
            app="livestream", version=settings.version
        ).set(1)
        Gauge(
            "livestream_info", "Engine version and container pipeline", ["version", "pipeline", "model_id"], registry=self.registry
        ).labels(version=settings.version, pipeline=settings.pipeline or "", model_id=settings.model_id or "").set(1)
        ProcessCollector(registry=self.registry)
        self.snapshot = _Snapshot()
        self.registry.register(self.snapshot)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = _route_label(request)
        started = time.perf_counter()
        status = 500
        self.in_flight.inc()
        try:
            response: web.StreamResponse = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # client gone (nginx's code)
            raise
        finally:
            self.in_flight.dec()
            self.requests.labels(request.method, route, str(status)).inc()
            self.latency.labels(request.method, route).observe(time.perf_counter() - started)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        app = request.app
        snap = self.snapshot
        snap.health = health_status_or_error(app, self.settings)  # logs what it turns into ERROR
        registry = app.get(REGISTRY_KEY)
        snap.models = registry.stats() if registry is not None else []
        manager = app.get(LIVE_MANAGER_KEY)
        if manager is not None:
            snap.live = {"limit": manager.limit, "sessions": [s.status(for_api=True) for s in manager.sessions()]}
        else:
            snap.live = None
        # Bounded by NVML: driver queries with no wait of their own (NVML_ERROR_TIMEOUT when a GPU
        # does not answer), which `HardwareInfo` logs and reports as no GPU figures.
        snap.gpus = await asyncio.to_thread(self.hardware.utilization_stats)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


#: The app's metrics (its registry); tests and other route areas may add their own figures to it.
METRICS_KEY = web.AppKey("metrics", EngineMetrics)


def setup_metrics(app: web.Application, settings: Settings, hardware: HardwareInfo) -> EngineMetrics:
    """Add `GET /metrics` and the request middleware (outermost, so it sees final statuses)."""
    metrics = EngineMetrics(settings, hardware)
    app[METRICS_KEY] = metrics
    app.middlewares.insert(0, metrics.middleware)
    app.router.add_get("/metrics", metrics.handle)
    return metrics
