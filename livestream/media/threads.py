"""A blocking loop in a dedicated thread, awaited as a future."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__all__ = ["run_in_thread"]


def run_in_thread(fn: Callable[[], None], name: str) -> asyncio.Future[None]:
    """Run `fn` in a dedicated daemon thread; the returned future completes when it returns.

    Long-lived blocking loops (a decoder reading its pipe) get their own thread rather than a
    slot in the loop's default executor, which a few sessions would exhaust. The owner must make
    `fn` return (close what it reads) and await the future: the thread never outlives it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def _settle(exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)

    def _main() -> None:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(_settle, error)
        except RuntimeError:  # the loop is closed: nobody awaits the result any more
            pass

    threading.Thread(target=_main, name=name, daemon=True).start()
    return future
