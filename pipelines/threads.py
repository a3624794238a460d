"""Thread pools that never hold the process's exit: `DaemonThreadPool` and `daemon_default_executor`.

`concurrent.futures.ThreadPoolExecutor`'s threads are not daemon threads, and the interpreter
joins every one of them at exit: one call stuck in a model (a Whisper or TTS run that never
checks for cancellation, a driver call that never returns) keeps the process alive after its
owner is gone. `DaemonThreadPool` is a drop-in `ThreadPoolExecutor` (asyncio's
`loop.set_default_executor` takes only those) with:

- daemon threads, named `{prefix}_{n}`, so a stuck one is named in the log and never keeps
  the process from exiting;
- a bounded `shutdown(wait=True)`: it waits at most `shutdown_timeout_s` for running calls,
  then logs the threads still running and returns;
- idle threads that end after `idle_timeout_s`, so a pool that is never shut down still ends
  its threads.

`daemon_default_executor()` installs one as the running loop's default executor
(`asyncio.to_thread`, `run_in_executor(None, ...)`) for the lifetime of an `async with`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["DaemonThreadPool", "daemon_default_executor"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(concurrent.futures.ThreadPoolExecutor):
    """A `ThreadPoolExecutor` whose threads are daemon threads and whose shutdown is bounded.

    It subclasses `ThreadPoolExecutor` for `isinstance` checks only (asyncio's default
    executor must be one); submitting, the threads and shutdown are its own.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        *,
        shutdown_timeout_s: float = 5.0,
        idle_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(max_workers=1)  # the base's machinery stays unused: no thread starts there
        if max_workers is not None and max_workers <= 0:
            raise ValueError(f"max_workers must be greater than 0, got {max_workers}")
        self.max_workers = max_workers if max_workers is not None else min(32, (os.cpu_count() or 1) + 4)
        self.prefix = thread_name_prefix or f"DaemonThreadPool-{id(self):x}"
        self.shutdown_timeout_s = shutdown_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        #: One token per idle thread not yet promised to a submitted call.
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._count = 0
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._main, name=f"{self.prefix}_{self._count}", daemon=True)
                self._count += 1
                self._threads.add(thread)
                thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; with `cancel_futures` the queued ones are cancelled; with `wait`, wait
        at most `shutdown_timeout_s` for the running ones (those still running are logged)."""
        with self._lock:
            first = not self._closed
            self._closed = True
            if cancel_futures:
                self._cancel_queued()
            threads = list(self._threads)
            if first:
                for _ in threads:
                    self._work.put(None)  # one stop per thread, after the queued calls
        if wait:
            stuck = self.join(self.shutdown_timeout_s)
            if stuck:
                log.warning(
                    "%s: %d thread(s) still running after %.1f s (daemon threads: they do not hold the exit): %s",
                    self.prefix,
                    len(stuck),
                    self.shutdown_timeout_s,
                    ", ".join(stuck),
                )

    def join(self, timeout: float) -> list[str]:
        """Wait at most `timeout` s for the threads to end; the names of those still running."""
        deadline = time.monotonic() + timeout
        for thread in self.threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads() if t.is_alive()]

    async def ajoin(self, timeout: float, poll_s: float = 0.05) -> list[str]:
        """`join` without blocking the event loop: polls the threads until `timeout`."""
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in self.threads()) and time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
        return [t.name for t in self.threads() if t.is_alive()]

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _cancel_queued(self) -> None:
        kept = 0
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is None:
                kept += 1
            else:
                item[0].cancel()
        for _ in range(kept):
            self._work.put(None)

    def _main(self) -> None:
        current = threading.current_thread()
        try:
            while True:
                try:
                    item = self._work.get(timeout=self.idle_timeout_s)
                except queue.Empty:
                    # Idle too long: end, unless a call was promised to this idle thread meanwhile.
                    if self._idle.acquire(blocking=False):
                        return
                    continue
                if item is None:
                    return
                future, fn, args, kwargs = item
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
                del item, future, fn, args, kwargs
                self._idle.release()
        finally:
            with self._lock:
                self._threads.discard(current)


@contextlib.asynccontextmanager
async def daemon_default_executor(
    *, max_workers: int | None = None, shutdown_timeout_s: float = 5.0
) -> AsyncIterator[DaemonThreadPool]:
    """The running loop's default executor is a `DaemonThreadPool` (threads `asyncio_{n}`)
    inside the block; on exit it is shut down: queued calls are cancelled and running ones get
    at most `shutdown_timeout_s` (polled, the loop keeps running) before they are logged and
    left to end on their own (daemon threads: they do not hold the exit)."""
    loop = asyncio.get_running_loop()
    executor = DaemonThreadPool(max_workers, "asyncio", shutdown_timeout_s=shutdown_timeout_s)
    loop.set_default_executor(executor)
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        stuck = await executor.ajoin(shutdown_timeout_s)
        if stuck:
            log.warning("default executor: %d call(s) still running at shutdown: %s", len(stuck), ", ".join(stuck))
