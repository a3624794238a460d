"""PipelineRegistry.acquire: holding a model's turn for a job the caller drives (a token stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.errors import ModelLoadError, PipelineBusyError, PipelineNotAvailableError
from pipelines.registry import PipelineRegistry


class Fake:
    task = "llm"

    def __init__(self, model_id: str, concurrency: int = 1) -> None:
        self.model_id = model_id
        self.concurrency = concurrency


def make_registry(max_queue: int = 8, concurrency: int = 1, fail: bool = False) -> PipelineRegistry:
    def factory(model_id: str, model_dir: Path | None) -> Fake:
        if fail:
            raise ModelLoadError(f"cannot load {model_id}")
        return Fake(model_id, concurrency)

    return PipelineRegistry(model_dir=None, default_models={}, pinned=None, max_queue=max_queue, factories={"llm": factory})


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def admitted(registry: PipelineRegistry) -> int:
    slot = registry._slots.get(("llm", "m"))  # no public view of the queue
    return 0 if slot is None else slot.admitted


async def hold(registry: PipelineRegistry, name: str, log: list[str], release: asyncio.Event) -> None:
    async with registry.acquire("llm", "m") as pipeline:
        assert pipeline.model_id == "m"
        log.append(f"{name} in")
        await release.wait()
        log.append(f"{name} out")


async def test_one_holder_at_a_time_in_arrival_order() -> None:
    registry = make_registry()
    log: list[str] = []
    gates = [asyncio.Event() for _ in range(3)]
    tasks = [asyncio.create_task(hold(registry, str(i), log, gates[i])) for i in range(3)]
    await until(lambda: log == ["0 in"] and admitted(registry) == 3)
    await asyncio.sleep(0.05)
    assert log == ["0 in"]
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert log == ["0 in", "0 out", "1 in", "1 out", "2 in", "2 out"]
    await registry.aclose()


async def test_acquire_and_run_share_the_turn() -> None:
    registry = make_registry()
    log: list[str] = []
    gate = asyncio.Event()
    holder = asyncio.create_task(hold(registry, "stream", log, gate))
    await until(lambda: log == ["stream in"])
    job = asyncio.create_task(registry.run("llm", "m", lambda p: log.append("job")))
    await until(lambda: admitted(registry) == 2)
    await asyncio.sleep(0.05)
    assert log == ["stream in"]
    gate.set()
    await asyncio.gather(holder, job)
    assert log == ["stream in", "stream out", "job"]
    await registry.aclose()


async def test_full_queue_is_busy_and_frees_up() -> None:
    registry = make_registry(max_queue=1)
    log: list[str] = []
    gate = asyncio.Event()
    tasks = [asyncio.create_task(hold(registry, str(i), log, gate)) for i in range(2)]
    await until(lambda: admitted(registry) == 2)
    with pytest.raises(PipelineBusyError, match="busy"):
        async with registry.acquire("llm", "m"):
            pass
    gate.set()
    await asyncio.gather(*tasks)
    async with registry.acquire("llm", "m") as pipeline:
        assert pipeline.model_id == "m"
    await registry.aclose()


async def test_cancelled_holder_and_waiter_free_their_places() -> None:
    registry = make_registry(max_queue=1)
    log: list[str] = []
    never = asyncio.Event()
    holder = asyncio.create_task(hold(registry, "holder", log, never))
    await until(lambda: log == ["holder in"])
    waiter = asyncio.create_task(hold(registry, "waiter", log, never))
    await until(lambda: admitted(registry) == 2)
    waiter.cancel()
    holder.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert log == ["holder in"]
    assert admitted(registry) == 0
    # Both places are free again: two more are admitted.
    gate = asyncio.Event()
    gate.set()
    await asyncio.gather(hold(registry, "a", log, gate), hold(registry, "b", log, gate))
    await registry.aclose()


async def test_batching_pipeline_admits_its_concurrency() -> None:
    registry = make_registry(max_queue=0, concurrency=3)
    async with registry.acquire("llm", "m"):  # loads it; now its concurrency is known
        pass
    log: list[str] = []
    gate = asyncio.Event()
    tasks = [asyncio.create_task(hold(registry, str(i), log, gate)) for i in range(3)]
    await until(lambda: sorted(log) == ["0 in", "1 in", "2 in"])
    with pytest.raises(PipelineBusyError):
        async with registry.acquire("llm", "m"):
            pass
    gate.set()
    await asyncio.gather(*tasks)
    await registry.aclose()


async def test_errors() -> None:
    registry = make_registry(fail=True)
    with pytest.raises(ModelLoadError, match="cannot load m"):
        async with registry.acquire("llm", "m"):
            pass
    with pytest.raises(PipelineNotAvailableError, match="no image-to-video pipeline"):
        async with registry.acquire("image-to-video", "m"):
            pass
    await registry.aclose()
    with pytest.raises(PipelineNotAvailableError, match="shutting down"):
        async with registry.acquire("llm", "m"):
            pass
