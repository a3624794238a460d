"""The soak benchmark's short version (`benchmarks/soak.py`): 48 live session cycles (trickle,
RTMP and DELETE in turn) and 12 batch requests on the tiny model. Every cycle succeeds; between
cycles nothing accumulates (asyncio tasks and open descriptors at the end are those of a quarter
of the way through, give or take idle keep-alive connections); once the engine is closed, nothing it started is left."""

from __future__ import annotations

from pathlib import Path

from test_no_leaks import Snapshot

from benchmarks.soak import run_batch, run_live


async def test_live_cycles_leave_nothing_behind() -> None:
    before = Snapshot.take()
    series = await run_live(48, 12)
    assert series.failures == 0
    quarter, last = series.samples[1], series.samples[-1]
    # Idle keep-alive connections come and go (a task and an fd each); a leak grows every cycle.
    assert last.tasks <= quarter.tasks + 4 and last.fds <= quarter.fds + 4, series.samples
    before.assert_nothing_leaked()


async def test_batch_requests_leave_nothing_behind(tiny_t2i_dir: Path, one_torch_thread: None) -> None:
    series = await run_batch(12, 3, tiny_t2i_dir.parent)
    assert series.failures == 0
    quarter, last = series.samples[1], series.samples[-1]
    assert last.tasks <= quarter.tasks + 4 and last.fds <= quarter.fds + 4, series.samples
