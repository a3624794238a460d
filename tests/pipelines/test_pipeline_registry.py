"""PipelineRegistry semantics with fake pipelines: loading, queueing, errors, health, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import (
    InferenceError,
    InvalidRequestError,
    ModelLoadError,
    ModelMismatchError,
    PipelineBusyError,
    PipelineNotAvailableError,
)
from pipelines.registry import BATCH_TASKS, DEFAULT_MODEL_IDS, IMPLEMENTATIONS, PipelineRegistry


class FakePipeline:
    task = "text-to-image"

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.running = 0
        self.max_running = 0
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def job(self, name: str, gate: threading.Event | None = None, started: threading.Event | None = None) -> str:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append(name)
        if started is not None:
            started.set()
        if gate is not None:
            assert gate.wait(10), "test gate never opened"
        with self._lock:
            self.running -= 1
        return name


class FakeFactory:
    """Counts loads; can block on a gate or fail."""

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None) -> None:
        self.loads: list[tuple[str, Path | None]] = []
        self.gate = gate
        self.error = error

    def __call__(self, model_id: str, model_dir: Path | None) -> FakePipeline:
        self.loads.append((model_id, model_dir))
        if self.gate is not None:
            assert self.gate.wait(10), "load gate never opened"
        if self.error is not None:
            raise self.error
        return FakePipeline(model_id)


def make_registry(
    factory: Callable[[str, Path | None], Any] | None = None,
    *,
    pinned: tuple[str, str] | None = None,
    max_queue: int = 8,
    default_models: dict[str, str] | None = None,
    load_retry_after: float = 0.0,
) -> PipelineRegistry:
    return PipelineRegistry(
        model_dir=Path("/models"),
        default_models=default_models or {},
        pinned=pinned,
        max_queue=max_queue,
        factories={"text-to-image": factory or FakeFactory()},
        load_retry_after=load_retry_after,
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


# -- model ids ---------------------------------------------------------------------------------


def test_resolve_model_id_lazy_mode() -> None:
    registry = make_registry(default_models={"text-to-image": "my/default"})
    assert registry.resolve_model_id("text-to-image", "org/model") == "org/model"
    assert registry.resolve_model_id("text-to-image", "") == "my/default"
    assert registry.resolve_model_id("upscale", "") == "stabilityai/stable-diffusion-x4-upscaler"
    assert registry.resolve_model_id("image-to-image", "") == DEFAULT_MODEL_IDS["image-to-image"] == "stabilityai/sdxl-turbo"
    assert registry.resolve_model_id("live-video-to-video", "") == "noop"
    with pytest.raises(PipelineNotAvailableError, match="no-such-task"):
        registry.resolve_model_id("no-such-task", "")


def test_resolve_model_id_runner_mode() -> None:
    registry = make_registry(pinned=("text-to-image", "stabilityai/sd-turbo"))
    assert registry.resolve_model_id("text-to-image", "") == "stabilityai/sd-turbo"
    assert registry.resolve_model_id("text-to-image", "stabilityai/sd-turbo") == "stabilityai/sd-turbo"
    with pytest.raises(ModelMismatchError) as exc_info:
        registry.resolve_model_id("text-to-image", "other/model")
    assert str(exc_info.value) == "pipeline configured with stabilityai/sd-turbo but called with other/model"
    assert isinstance(exc_info.value, ValueError)
    # Other tasks are not pinned.
    assert registry.resolve_model_id("upscale", "x/y") == "x/y"


# -- availability ------------------------------------------------------------------------------


async def test_task_without_implementation_is_not_available() -> None:
    registry = make_registry()
    assert registry.is_available("text-to-image")
    assert not registry.is_available("image-to-video")
    with pytest.raises(PipelineNotAvailableError, match=r"pipeline not available.*image-to-video"):
        await registry.run("image-to-video", "some/model", lambda p: p)
    with pytest.raises(PipelineNotAvailableError, match=r"pipeline not available.*bogus"):
        await registry.run("bogus", "some/model", lambda p: p)
    await registry.aclose()


def test_builtin_implementations() -> None:
    registry = PipelineRegistry(model_dir=None, default_models={}, pinned=None, max_queue=1)
    assert registry.is_available("text-to-image")
    assert not registry.is_available("bogus")
    assert set(IMPLEMENTATIONS) <= set(BATCH_TASKS)
    assert all(registry.is_available(task) for task in IMPLEMENTATIONS)


# -- loading -----------------------------------------------------------------------------------


async def test_lazy_load_once_under_concurrency() -> None:
    gate = threading.Event()
    factory = FakeFactory(gate=gate)
    registry = make_registry(factory)
    assert factory.loads == []
    tasks = [asyncio.create_task(registry.run("text-to-image", "m", lambda p, i=i: p.job(f"job{i}"))) for i in range(5)]
    await until(lambda: len(factory.loads) == 1)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [f"job{i}" for i in range(5)]
    assert factory.loads == [("m", Path("/models"))]
    # Cached: later requests do not load again; another model id is its own slot.
    await registry.run("text-to-image", "m", lambda p: p.job("again"))
    await registry.run("text-to-image", "other", lambda p: p.job("other"))
    assert [m for m, _ in factory.loads] == ["m", "other"]
    await registry.aclose()


async def test_load_failure_is_model_load_error_and_retried() -> None:
    factory = FakeFactory(error=RuntimeError("weights corrupt"))
    registry = make_registry(factory)
    with pytest.raises(ModelLoadError, match="weights corrupt"):
        await registry.run("text-to-image", "m", lambda p: p)
    factory.error = ModelLoadError("Model 'm' not found")
    with pytest.raises(ModelLoadError, match="not found"):
        await registry.run("text-to-image", "m", lambda p: p)
    factory.error = None
    assert await registry.run("text-to-image", "m", lambda p: p.model_id) == "m"
    assert len(factory.loads) == 3
    await registry.aclose()


async def test_load_failure_is_remembered_then_retried() -> None:
    factory = FakeFactory(error=RuntimeError("no network"))
    registry = make_registry(factory, load_retry_after=0.3)
    for _ in range(3):
        with pytest.raises(ModelLoadError, match="no network"):
            await registry.run("text-to-image", "m", lambda p: p)
    assert len(factory.loads) == 1
    factory.error = None
    await asyncio.sleep(0.35)
    assert await registry.run("text-to-image", "m", lambda p: p.model_id) == "m"
    assert len(factory.loads) == 2
    await registry.aclose()


async def test_cancelled_request_cancels_its_running_job() -> None:
    from pipelines.cancel import raise_if_cancelled

    started, stopped = threading.Event(), threading.Event()

    def job(p: Any) -> None:
        started.set()
        try:
            for _ in range(1000):
                raise_if_cancelled()
                time.sleep(0.01)
        finally:
            stopped.set()

    registry = make_registry()
    task = asyncio.create_task(registry.run("text-to-image", "m", job))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(stopped.wait, 2)
    await registry.aclose()


async def test_cancelled_first_request_does_not_cancel_the_shared_load() -> None:
    gate = threading.Event()
    factory = FakeFactory(gate=gate)
    registry = make_registry(factory)
    first = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("first")))
    second = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("second")))
    await until(lambda: len(factory.loads) == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == "second"
    assert len(factory.loads) == 1
    await registry.aclose()


# -- health ------------------------------------------------------------------------------------


async def test_health_pinned_loading_then_ok() -> None:
    gate = threading.Event()
    factory = FakeFactory(gate=gate)
    registry = make_registry(factory, pinned=("text-to-image", "m"))
    assert registry.health == "LOADING"
    await registry.start()
    await until(lambda: len(factory.loads) == 1)
    assert registry.health == "LOADING"
    gate.set()
    await until(lambda: registry.health == "OK")
    # The request uses the preloaded model without loading again.
    assert await registry.run("text-to-image", "m", lambda p: p.job("x")) == "x"
    assert len(factory.loads) == 1
    await registry.aclose()


async def test_health_pinned_load_failure_is_error() -> None:
    factory = FakeFactory(error=OSError("no such model"))
    registry = make_registry(factory, pinned=("text-to-image", "missing/model"))
    await registry.start()
    await until(lambda: registry.health != "LOADING")
    assert registry.health == "ERROR"
    with pytest.raises(ModelLoadError):
        await registry.run("text-to-image", "missing/model", lambda p: p)
    assert registry.health == "ERROR"
    await registry.aclose()


async def test_health_unpinned_and_unimplemented_pinned() -> None:
    assert make_registry().health == "OK"
    registry = make_registry(pinned=("image-to-video", "x/y"))
    await registry.start()
    assert registry.health == "ERROR"
    await registry.aclose()


# -- jobs --------------------------------------------------------------------------------------


async def test_one_job_at_a_time_in_arrival_order() -> None:
    gate = threading.Event()
    registry = make_registry()
    pipeline: list[FakePipeline] = []
    await registry.run("text-to-image", "m", pipeline.append)
    tasks = [
        asyncio.create_task(registry.run("text-to-image", "m", lambda p, i=i: p.job(f"j{i}", gate))) for i in range(4)
    ]
    await until(lambda: pipeline[0].running == 1)
    await asyncio.sleep(0.05)
    assert pipeline[0].running == 1
    gate.set()
    assert await asyncio.gather(*tasks) == ["j0", "j1", "j2", "j3"]
    assert pipeline[0].calls == ["j0", "j1", "j2", "j3"]
    assert pipeline[0].max_running == 1
    await registry.aclose()


async def test_full_queue_is_busy() -> None:
    gate = threading.Event()
    started = threading.Event()
    registry = make_registry(max_queue=1)
    running = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("running", gate, started)))
    await until(started.is_set)
    waiting = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("waiting")))
    await asyncio.sleep(0.02)
    with pytest.raises(PipelineBusyError, match=r"busy.*1 are waiting"):
        await registry.run("text-to-image", "m", lambda p: p.job("rejected"))
    # Other models have their own queue.
    assert await registry.run("text-to-image", "m2", lambda p: p.job("other model")) == "other model"
    gate.set()
    assert await running == "running"
    assert await waiting == "waiting"
    # Room again.
    assert await registry.run("text-to-image", "m", lambda p: p.job("later")) == "later"
    await registry.aclose()


async def test_max_queue_zero_allows_only_the_running_job() -> None:
    gate = threading.Event()
    started = threading.Event()
    registry = make_registry(max_queue=0)
    running = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("running", gate, started)))
    await until(started.is_set)
    with pytest.raises(PipelineBusyError):
        await registry.run("text-to-image", "m", lambda p: p)
    gate.set()
    await running
    await registry.aclose()


async def test_errors_from_the_call() -> None:
    registry = make_registry()

    def bad_request(p: FakePipeline) -> None:
        raise InvalidRequestError("height must be a multiple of 8")

    def crash(p: FakePipeline) -> None:
        raise RuntimeError("boom")

    with pytest.raises(InvalidRequestError, match="multiple of 8"):
        await registry.run("text-to-image", "m", bad_request)
    with pytest.raises(InferenceError) as exc_info:
        await registry.run("text-to-image", "m", crash)
    assert isinstance(exc_info.value.__cause__, RuntimeError)
    assert "boom" not in str(exc_info.value)  # details go to the log, not to clients
    # The slot is free again after failures.
    assert await registry.run("text-to-image", "m", lambda p: p.job("ok")) == "ok"
    await registry.aclose()


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_waiter_leaves_the_queue() -> None:
    gate = threading.Event()
    started = threading.Event()
    registry = make_registry(max_queue=1)
    pipelines: list[FakePipeline] = []
    running = asyncio.create_task(registry.run("text-to-image", "m", lambda p: (pipelines.append(p), p.job("running", gate, started))[1]))
    await until(started.is_set)
    waiter = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("cancelled")))
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # Its place in the queue is free again.
    replacement = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("replacement")))
    await asyncio.sleep(0.02)
    gate.set()
    assert await running == "running"
    assert await replacement == "replacement"
    assert pipelines[0].calls == ["running", "replacement"]
    await registry.aclose()


async def test_cancelled_running_job_keeps_the_model_until_its_thread_returns() -> None:
    gate = threading.Event()
    started = threading.Event()
    registry = make_registry(max_queue=4)
    pipelines: list[FakePipeline] = []
    await registry.run("text-to-image", "m", pipelines.append)
    running = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("running", gate, started)))
    await until(started.is_set)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    nxt = asyncio.create_task(registry.run("text-to-image", "m", lambda p: p.job("next")))
    await asyncio.sleep(0.05)
    assert not nxt.done()  # the cancelled job's thread still owns the model
    assert pipelines[0].calls == ["running"]
    gate.set()
    assert await nxt == "next"
    assert pipelines[0].max_running == 1
    await registry.aclose()


async def test_aclose_is_idempotent_and_refuses_new_work() -> None:
    gate = threading.Event()
    factory = FakeFactory(gate=gate)
    registry = make_registry(factory, pinned=("text-to-image", "m"))
    await registry.start()
    await until(lambda: len(factory.loads) == 1)
    await registry.aclose()
    await registry.aclose()
    gate.set()
    with pytest.raises(PipelineNotAvailableError, match="shutting down"):
        await registry.run("text-to-image", "m", lambda p: p)
