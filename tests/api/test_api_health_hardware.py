"""`/health` (LOADING/OK/ERROR/IDLE as ai-runner means them), `/hardware/*` and `/version`."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ClientFactory

from livestream.keys import LIVE_HEALTH_KEY
from pipelines.errors import ModelLoadError


async def _wait_status(client: Any, status: str) -> None:
    for _ in range(200):
        resp = await client.get("/health")
        if (await resp.json())["status"] == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"/health never became {status}")


async def test_engine_mode_is_ok(make_client: ClientFactory) -> None:
    client = await make_client()
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "OK"}


async def test_pinned_model_loading_then_ok(make_client: ClientFactory) -> None:
    release = threading.Event()

    class Model:
        def generate(self, inp: Any) -> list[Any]:
            return []

    def factory(model_id: str, model_dir: Path | None) -> Model:
        release.wait(10)
        return Model()

    client = await make_client(pipeline="text-to-image", model_id="pinned/model", factories={"text-to-image": factory})
    assert await (await client.get("/health")).json() == {"status": "LOADING"}
    release.set()
    await _wait_status(client, "OK")


async def test_pinned_model_failing_to_load_is_error(make_client: ClientFactory) -> None:
    def factory(model_id: str, model_dir: Path | None) -> Any:
        raise ModelLoadError("weights missing")

    client = await make_client(pipeline="text-to-image", model_id="pinned/model", factories={"text-to-image": factory})
    await _wait_status(client, "ERROR")


async def test_pinned_task_without_pipeline_is_error(make_client: ClientFactory) -> None:
    client = await make_client(pipeline="image-to-video", model_id="some/model")
    assert await (await client.get("/health")).json() == {"status": "ERROR"}


class _Live:
    def __init__(self, health: str) -> None:
        self.health = health


async def test_live_runner_reports_the_live_manager(make_client: ClientFactory) -> None:
    live = _Live("IDLE")
    client = await make_client(pipeline="live-video-to-video", model_id="noop", state={LIVE_HEALTH_KEY: live})
    assert await (await client.get("/health")).json() == {"status": "IDLE"}
    live.health = "LOADING"
    assert await (await client.get("/health")).json() == {"status": "LOADING"}


async def test_live_manager_ignored_outside_live_runner_mode(make_client: ClientFactory) -> None:
    client = await make_client(state={LIVE_HEALTH_KEY: _Live("IDLE")})
    assert await (await client.get("/health")).json() == {"status": "OK"}


async def test_hardware_without_gpu(make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: no NVML
    client = await make_client(pipeline="text-to-image", model_id="m/x")
    info = await (await client.get("/hardware/info")).json()
    stats = await (await client.get("/hardware/stats")).json()
    if sys.modules.get("torch") is None or not sys.modules["torch"].cuda.is_available():
        assert info == {"pipeline": "text-to-image", "model_id": "m/x", "gpu_info": {}}
        assert stats == {"pipeline": "text-to-image", "model_id": "m/x", "gpu_stats": {}}


async def test_hardware_unset_pipeline_is_empty_strings(make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    client = await make_client()
    info = await (await client.get("/hardware/info")).json()
    assert (info["pipeline"], info["model_id"]) == ("", "")


def _fake_nvml() -> types.ModuleType:
    nvml: Any = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: 2
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-0000-{h}"
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 2**30, free=79 * 2**30, used=2**30)
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=37, memory=12)
    return nvml


async def test_hardware_from_nvml(make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    client = await make_client(pipeline="live-video-to-video", model_id="noop")
    info = await (await client.get("/hardware/info")).json()
    assert info["pipeline"] == "live-video-to-video" and info["model_id"] == "noop"
    assert info["gpu_info"]["1"] == {
        "id": "GPU-0000-1",
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total": 80 * 2**30,
        "memory_free": 79 * 2**30,
        "major": 9,
        "minor": 0,
    }
    stats = await (await client.get("/hardware/stats")).json()
    assert stats["gpu_stats"]["0"] == {
        "id": "GPU-0000-0",
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total": 80 * 2**30,
        "memory_free": 79 * 2**30,
        "utilization_compute": 37,
        "utilization_memory": 12,
    }


async def test_version(make_client: ClientFactory) -> None:
    client = await make_client(pipeline="text-to-image", model_id="m/x", version="1.2.3")
    assert await (await client.get("/version")).json() == {"pipeline": "text-to-image", "model_id": "m/x", "version": "1.2.3"}
