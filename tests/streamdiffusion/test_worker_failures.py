"""The GPU worker when its thread dies or is stuck, and its fairness between calls and ticks.

Fake slots and a fake model (no diffusion): what is tested is the worker's bookkeeping. Every
failure fails the waiting and later requests at once, frees the model and ends the thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from pipelines.live.diffusion_worker import (
    DiffusionWorker,
    Job,
    WorkerClosedError,
    WorkerPool,
    WorkerStuckError,
)

FRAME = torch.zeros(8, 8, 3, dtype=torch.uint8)


@dataclass
class _Models:
    backend: Any = None
    device: Any = field(default_factory=lambda: torch.device("cpu"))


class _PassSlot:
    """Returns every frame as it came (no model); `log` records the order of events."""

    def __init__(self, log: list[str] | None = None, name: str = "slot") -> None:
        self.log = log if log is not None else []
        self.name = name

    def begin(self, models: Any, frame: torch.Tensor) -> Job:
        self.log.append(f"tick {self.name}")
        return Job(output=frame)

    def end(self, job: Job, output: torch.Tensor) -> torch.Tensor:
        return output

    def invalidate(self) -> None:
        pass


class _DyingSlot(_PassSlot):
    """`end` raises: an exception the tick does not catch, so the worker loop dies."""

    def end(self, job: Job, output: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("slot bug")


class _BlockingSlot(_PassSlot):
    """`begin` blocks until `gate` is set: a stuck kernel, as the worker sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def begin(self, models: Any, frame: torch.Tensor) -> Job:
        self.entered.set()
        self.gate.wait()
        return Job(output=frame)


def _worker(**kwargs: Any) -> DiffusionWorker:
    worker = DiffusionWorker("fake", _Models, **kwargs)
    worker.start()
    worker.wait_loaded()
    return worker


def _hold(worker: DiffusionWorker) -> tuple[threading.Event, threading.Thread]:
    """Park the worker thread in a call until the returned gate is set."""
    gate, parked = threading.Event(), threading.Event()

    def park() -> None:
        parked.set()
        gate.wait(30)

    thread = threading.Thread(target=worker.call, args=(park,))
    thread.start()
    assert parked.wait(30)
    return gate, thread


def test_a_worker_whose_loop_dies_fails_every_waiting_and_later_request_and_frees_the_model() -> None:
    worker = _worker()
    other = worker.join(_PassSlot())
    dying = worker.join(_DyingSlot())
    gate, parker = _hold(worker)
    # Frames of both sessions wait for the same tick; the dying slot's `end` kills the loop.
    futures = [worker.submit(dying, FRAME), worker.submit(other, FRAME)]
    gate.set()
    parker.join(30)
    for future in futures:
        with pytest.raises(WorkerClosedError):
            future.result(30)
    worker._thread.join(30)
    assert not worker._thread.is_alive()
    assert worker.failed and worker.models is None
    with pytest.raises(WorkerClosedError, match="slot bug"):
        worker.submit(other, FRAME)
    with pytest.raises(WorkerClosedError):
        worker.call(lambda: None)
    worker.close()


def test_a_dead_worker_is_replaced_by_the_pool() -> None:
    pool = WorkerPool()
    worker = pool.acquire("fake", _Models)
    slot = worker.join(_DyingSlot())
    with pytest.raises(WorkerClosedError):
        worker.process(slot, FRAME)
    fresh = pool.acquire("fake", _Models)
    assert fresh is not worker and not fresh.failed
    pool.release(worker)
    pool.release(fresh)
    worker._thread.join(30)
    fresh._thread.join(30)
    assert not worker._thread.is_alive() and not fresh._thread.is_alive()


def test_a_stuck_worker_fails_as_stuck_and_its_thread_ends_once_released() -> None:
    worker = _worker(frame_timeout_s=0.2, call_timeout_s=0.2)
    slot = _BlockingSlot()
    slot_id = worker.join(slot)
    other = worker.join(_PassSlot())
    with pytest.raises(WorkerStuckError, match="stuck"):
        worker.process(slot_id, FRAME)
    assert slot.entered.is_set() and worker.failed
    # Everything after fails at once, without waiting for the stuck thread.
    with pytest.raises(WorkerClosedError):
        worker.submit(other, FRAME)
    with pytest.raises(WorkerClosedError):
        worker.call(lambda: None)
    slot.gate.set()
    worker.close(30)
    assert not worker._thread.is_alive()
    assert worker.models is None


def test_a_call_never_runs_twice_in_a_row_while_frames_wait() -> None:
    """A new session's setup (one call per warm-up frame) interleaves with the running
    stream's ticks: the frame waits for at most one call."""
    worker = _worker()
    order: list[str] = []
    running = worker.join(_PassSlot(order, "running"))
    gate, parker = _hold(worker)
    calls = [threading.Thread(target=worker.call, args=(order.append, f"call {i}")) for i in range(2)]
    for thread in calls:
        thread.start()
    while len(worker._calls) < 2:
        threading.Event().wait(0.01)
    future = worker.submit(running, FRAME)
    gate.set()
    future.result(30)
    for thread in [parker, *calls]:
        thread.join(30)
    # The worker was parked in a call, so the waiting frame goes before the next call.
    assert order == ["tick running", "call 0", "call 1"]
    worker.close()
    assert not worker._thread.is_alive()
