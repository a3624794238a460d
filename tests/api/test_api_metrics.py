"""`GET /metrics`: the request middleware and the registry figures while a model loads, runs and queues."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ClientFactory, FakeTextToImage
from prometheus_client.parser import text_string_to_metric_families

from pipelines.errors import ModelLoadError

MODEL = "acme/sd"
FAST = {"prompt": "x", "height": 8, "width": 8}


async def scrape(client: TestClient[Any, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def model_metric(samples: dict[Any, float], name: str) -> float | None:
    return samples.get((name, (("model_id", MODEL), ("task", "text-to-image"))))


async def until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.02)


async def test_queue_busy_loading_and_requests(make_client: ClientFactory) -> None:
    loaded = threading.Event()
    release = threading.Event()

    class Slow(FakeTextToImage):
        def generate(self, inp: Any) -> Any:
            release.wait(10)
            return super().generate(inp)

    def factory(model_id: str, model_dir: Path | None) -> Slow:
        loaded.wait(10)
        return Slow(model_id, model_dir)

    client = await make_client(pipeline="text-to-image", model_id=MODEL, factories={"text-to-image": factory})
    m = await scrape(client)
    assert m[("livestream_health", (("status", "LOADING"),))] == 1
    assert model_metric(m, "livestream_model_loading") == 1 and model_metric(m, "livestream_model_loaded") == 0

    jobs = [asyncio.create_task(client.post("/text-to-image", json=FAST)) for _ in range(3)]
    loaded.set()

    async def one_running_two_waiting() -> bool:
        m = await scrape(client)
        return model_metric(m, "livestream_model_busy") == 1 and model_metric(m, "livestream_model_queue_depth") == 2

    await until(one_running_two_waiting)
    m = await scrape(client)
    assert m[("livestream_health", (("status", "OK"),))] == 1
    assert m[("livestream_models_loaded", ())] == 1
    assert (model_metric(m, "livestream_model_load_seconds") or 0) > 0
    assert m[("livestream_http_requests_in_flight", ())] == 4  # three jobs and this scrape
    release.set()
    assert [r.status for r in await asyncio.gather(*jobs)] == [200, 200, 200]

    await client.get("/no/such/route")
    m = await scrape(client)
    assert model_metric(m, "livestream_model_busy") == 0 and model_metric(m, "livestream_model_queue_depth") == 0
    key = (("method", "POST"), ("route", "/text-to-image"), ("status", "200"))
    assert m[("livestream_http_requests_total", key)] == 3
    assert m[("livestream_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    hist = m[("livestream_http_request_duration_seconds_count", (("method", "POST"), ("route", "/text-to-image")))]
    assert hist == 3
    # No live sessions in batch mode, but the figures are there; no GPU here: no GPU series.
    assert m[("livestream_live_sessions", ())] == 0
    assert not [k for k in m if k[0].startswith("livestream_gpu_")]


async def test_load_failure_and_error_statuses(make_client: ClientFactory) -> None:
    def broken(model_id: str, model_dir: Path | None) -> Any:
        raise ModelLoadError(f"{model_id} is not here")

    client = await make_client(pipeline="text-to-image", model_id=MODEL, factories={"text-to-image": broken})

    async def errored() -> bool:
        return (await scrape(client))[("livestream_health", (("status", "ERROR"),))] == 1

    await until(errored)
    resp = await client.post("/text-to-image", json=FAST)
    assert resp.status == 503  # a model that cannot be loaded is the deployment's doing
    resp = await client.post("/text-to-image", json={"prompt": 3})
    assert resp.status in (400, 422)
    m = await scrape(client)
    statuses = {
        dict(labels)["status"]: v for (name, labels), v in m.items() if name == "livestream_http_requests_total" and ("route", "/text-to-image") in labels
    }
    assert statuses["503"] == 1 and sum(statuses.values()) == 2
    assert model_metric(m, "livestream_model_loaded") == 0


async def test_metrics_are_per_app(make_client: ClientFactory) -> None:
    a = await make_client()
    b = await make_client()
    for _ in range(2):
        await a.get("/version")
    ma, mb = await scrape(a), await scrape(b)
    key = ("livestream_http_requests_total", (("method", "GET"), ("route", "/version"), ("status", "200")))
    assert ma[key] == 2 and key not in mb
