"""Compile ahead in a process of its own, so a new stream's `torch.compile` never stalls the
running streams; Inductor's on-disk caches carry the result back.

Why a process: compiling a new frame size (dynamo's tracing, AOTAutograd, Inductor's lowering
and code generation) is seconds to minutes of Python that holds the GIL. Run on any thread of
the engine's process, it stalls the worker thread that serves every running stream: each of
the worker's torch calls releases the GIL while it computes and then waits for it again (a
GIL convoy). A child process (`spawn`) has a GIL of its own.

How the result comes back: the child builds the same model (`load_models` with the same
params, device and dtype) and runs the same `CompiledBackend.prepare(shapes, dtype)`, with
`TORCHINDUCTOR_CACHE_DIR` set to this process's Inductor cache folder. Inductor stores every
compiled graph in its FX graph cache and AOTAutograd cache there (keyed by the graph, input
shapes, dtypes, torch version and config: weights are graph inputs, not part of the key). The
parent's own `prepare` then finds them: it still traces with dynamo (short, the Python part
that is left), but loads the compiled code instead of generating and building it.

Only Inductor has these caches: another dynamo backend (`aot_eager`, used to debug) gets no
child (it would compile for nothing); the parent compiles as before.

CUDA: the child loads its own copy of the model on the same device while it compiles (GPU
memory for a second model, for the compile's duration). CUDA graphs (`reduce-overhead`) are
not carried over: they are per process and per thread (cudagraph trees keep one tree per
thread). The worker thread captures its own on its first run at the shape, which the sliced
warm-up frames (worker calls, one frame each) do after the cache is warm: a capture costs a
frame or two, not a compile.

Bounds: `Precompiler.run` waits at most `timeout_s`, then kills the child; `cancel()` (the
session ended, from any thread) kills it at once. A failed or timed-out child is logged and the
parent compiles in-process, as it would without one.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from .streamdiffusion_params import StreamDiffusionParams

__all__ = ["PrecompileCancelled", "PrecompileError", "PrecompileJob", "Precompiler", "inductor_cache_dir"]

log = logging.getLogger(__name__)

Shapes = Sequence[tuple[str, tuple[tuple[int, ...], ...]]]
#: How often the waiting thread looks at the child and at `cancel()`.
_POLL_S = 0.2
#: How long a killed child gets to be reaped.
_REAP_S = 5.0


class PrecompileError(ModelLoadError):
    """The compile child failed or ran out of time (the parent compiles in-process then)."""


class PrecompileCancelled(PrecompileError):
    """`cancel()` killed the compile child: its session ended."""


@dataclass(frozen=True)
class PrecompileJob:
    """What the child builds and compiles; picklable (spawn)."""

    #: The model builder, `build(params, model_dir=, device=)` -> models with a `backend`: a
    #: module-level function (spawn pickles it by name), so this module imports no pipeline.
    build: Callable[..., Any]
    params: StreamDiffusionParams
    model_dir: str | None
    device: str
    shapes: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]
    cache_dir: str
    threads: int


def inductor_cache_dir() -> str:
    """The folder this process's Inductor caches compiled graphs in (`TORCHINDUCTOR_CACHE_DIR`,
    else Inductor's per-user default): the child gets the same one."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return str(cache_dir())


def cache_counters() -> dict[str, int]:
    """Inductor's FX graph cache and the AOTAutograd cache hits and misses in this process."""
    from torch._dynamo.utils import counters

    return {
        "fxgraph_hit": int(counters["inductor"]["fxgraph_cache_hit"]),
        "fxgraph_miss": int(counters["inductor"]["fxgraph_cache_miss"]),
        "aot_hit": int(counters["aot_autograd"]["autograd_cache_hit"]),
        "aot_miss": int(counters["aot_autograd"]["autograd_cache_miss"]),
    }


class Precompiler:
    """Runs one compile child at a time for its owner (a session's pipeline)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: Any = None  # multiprocessing's SpawnProcess (untyped)
        self._cancelled = threading.Event()

    def run(self, job: PrecompileJob) -> float:
        """Compile `job` in a child; the seconds it took. Raises `PrecompileError` (failure,
        timeout: the child is killed) or `PrecompileCancelled`."""
        if self._cancelled.is_set():
            raise PrecompileCancelled("the session ended")
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child_main, args=(writer, job), name="livestream-precompile", daemon=True)
        started = time.monotonic()
        try:
            with self._lock:
                if self._cancelled.is_set():
                    raise PrecompileCancelled("the session ended")
                process.start()
                self._process = process
            writer.close()  # the child holds its own end now
            return self._wait(process, reader, started)
        finally:
            writer.close()
            reader.close()
            with self._lock:
                self._process = None
            _reap(process)

    def cancel(self) -> None:
        """Kill the running child (if any) and refuse new ones; any thread, idempotent."""
        with self._lock:
            self._cancelled.set()
            process = self._process
        if process is not None and process.is_alive():
            log.info("precompile: killing the compile process (pid %s): its session ended", process.pid)
            process.kill()

    def _wait(self, process: Any, reader: Connection, started: float) -> float:
        deadline = started + self.timeout_s
        while not reader.poll(_POLL_S):
            if self._cancelled.is_set():
                raise PrecompileCancelled("the session ended")
            if not process.is_alive() and not reader.poll(0):
                raise PrecompileError(f"the compile process exited with code {process.exitcode} without a result")
            if time.monotonic() >= deadline:
                raise PrecompileError(f"the compile process took longer than {self.timeout_s:g} s")
        if self._cancelled.is_set():
            raise PrecompileCancelled("the session ended")
        try:
            status, value = reader.recv()
        except EOFError:
            process.join(_REAP_S)
            raise PrecompileError(f"the compile process exited with code {process.exitcode} without a result") from None
        if status != "ok":
            raise PrecompileError(f"the compile process failed: {value}")
        return time.monotonic() - started


def _reap(process: Any) -> None:
    if process.pid is None:  # never started
        return
    if process.is_alive():
        process.kill()
    process.join(_REAP_S)
    if process.is_alive():
        log.error("precompile: compile process %s did not end after kill", process.pid)
        return
    process.close()


def _child_main(conn: Connection, job: PrecompileJob) -> None:
    """In the child: build the model and compile the shapes into the shared cache folder."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = job.cache_dir
    try:
        import torch

        torch.set_num_threads(job.threads)
        started = time.monotonic()
        models = job.build(job.params, model_dir=None if job.model_dir is None else _path(job.model_dir), device=torch.device(job.device))
        prepare = getattr(models.backend, "prepare", None)
        if prepare is None:
            raise PrecompileError(f"the {getattr(models.backend, 'name', '?')} backend compiles nothing")
        prepare(list(job.shapes), models.dtype)
        conn.send(("ok", time.monotonic() - started))
    except BaseException as exc:  # reported to the parent, which logs it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _path(value: str) -> Any:
    from pathlib import Path

    return Path(value)
