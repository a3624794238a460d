"""Thread pools never hold the process's exit: a stuck call (a model that never returns) is
named in the log and the process still exits (`pipelines.threads`)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pipelines.threads import DaemonThreadPool, daemon_default_executor

ROOT = Path(__file__).resolve().parents[2]


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    # The timeout only guards the test run against the hang under test.
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_registry_with_a_stuck_job_lets_the_process_exit() -> None:
    done = _run_script(
        """
        import asyncio, logging, threading
        from pipelines.registry import PipelineRegistry

        logging.basicConfig(level=logging.WARNING)
        forever, running = threading.Event(), threading.Event()

        def stuck(pipeline):
            running.set()
            forever.wait()  # a model call that never returns

        async def main():
            registry = PipelineRegistry(
                model_dir=None, default_models={}, pinned=None, max_queue=0,
                factories={"text-to-image": lambda model_id, model_dir: object()}, close_timeout_s=0.2,
            )
            job = asyncio.ensure_future(registry.run("text-to-image", "m", stuck))
            while not running.is_set():
                await asyncio.sleep(0.01)
            await registry.aclose()
            job.cancel()
            print("closed", sorted(t.name for t in threading.enumerate() if t.name.startswith("pipeline")))

        asyncio.run(main())
        """
    )
    assert done.returncode == 0, done.stderr
    assert "closed ['pipeline_" in done.stdout
    assert "job thread(s) still running: pipeline_" in done.stderr


def test_stuck_to_thread_call_lets_the_process_exit() -> None:
    done = _run_script(
        """
        import asyncio, logging, threading
        from pipelines.threads import daemon_default_executor

        logging.basicConfig(level=logging.WARNING)
        forever = threading.Event()

        async def main():
            async with daemon_default_executor(shutdown_timeout_s=0.2):
                try:
                    await asyncio.wait_for(asyncio.to_thread(forever.wait), 0.2)
                except TimeoutError:
                    print("timed out")

        asyncio.run(main())
        """
    )
    assert done.returncode == 0, done.stderr
    assert "timed out" in done.stdout
    assert "still running at shutdown: asyncio_0" in done.stderr


def test_pool_runs_calls_on_named_daemon_threads() -> None:
    pool = DaemonThreadPool(2, "work")
    try:
        names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(4)}
        assert names <= {"work_0", "work_1"}
        assert all(t.daemon for t in pool.threads())
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
        assert list(pool.map(abs, [-1, -2], timeout=5)) == [1, 2]
    finally:
        pool.shutdown()
    assert pool.threads() == []
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(abs, 1)


def test_shutdown_is_bounded_and_names_the_stuck_thread(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    pool = DaemonThreadPool(1, "stuck", shutdown_timeout_s=0.1)
    running = pool.submit(release.wait, 30)
    queued = pool.submit(abs, -1)
    try:
        with caplog.at_level(logging.WARNING, logger="pipelines.threads"):
            pool.shutdown(wait=True, cancel_futures=True)
        assert "stuck_0" in caplog.text
        assert queued.cancelled()
    finally:
        release.set()
    assert running.result(30) is True
    assert pool.join(30) == []


def test_idle_threads_end_on_their_own() -> None:
    pool = DaemonThreadPool(2, "idle", idle_timeout_s=0.05)
    assert pool.submit(abs, -3).result(5) == 3
    assert pool.join(30) == []  # no shutdown: the idle thread ended by itself
    assert pool.submit(abs, -4).result(5) == 4  # and a new one starts for the next call
    pool.shutdown()


async def test_default_executor_is_installed_for_the_block() -> None:
    async with daemon_default_executor() as pool:
        name = await asyncio.to_thread(lambda: threading.current_thread().name)
        assert name == "asyncio_0"
        assert pool.threads()
    assert pool.threads() == []
