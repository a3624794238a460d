"""The GPU worker: one thread per loaded diffusion model, batching every session's newest frame.

    pool = WorkerPool()
    worker = pool.acquire(key, load, device=device)   # loads on the worker's own thread
    slot_id = worker.join(slot)                        # a session's `WorkerSlot`
    output = worker.process(slot_id, frame)            # from the session's thread; blocks
    worker.call(fn, *args)                             # runs fn on the worker thread, between ticks
    worker.leave(slot_id); pool.release(worker)

The worker thread owns the model, its backend (eager or compiled), its device stream (CUDA:
a `torch.cuda.Stream` of its own; results come back on the CPU, so nothing crosses streams)
and every slot's tensors. Sessions never touch them: params, warm-up and prompt embeddings go
through `call`, which runs between two ticks.

**Tick.** Each session keeps at most one pending frame (a newer one replaces it: the older
one's future fails with `FrameDroppedError`). A tick starts when a frame is pending and waits
for the sessions that were in the previous tick, but never longer than `frame_interval_s`
after the first pending frame arrived; then it takes every pending frame:

1. each frame is checked (`check_frame`); a bad frame fails its own future with
   `InvalidFrameError` and never enters the batch;
2. the slot's `begin` turns it into a `Job` (an image and a `StreamState`, or an output
   without the model: similarity-filter skip, pass-through);
3. jobs are grouped by shape (image size, embedding shape; sequential-mode jobs alone), and
   each group runs one VAE encode, one `stream_batch.step` (one UNet call for all its
   streams, whatever ControlNets each uses: `pipelines.live.controlnets`) and one VAE decode;
4. outputs go to the CPU in one copy and the slots' `end` records them.

**Failures.** A group whose step raises has its streams' states restored and each stream
retried alone: streams that pass get their output, streams that fail alone get
`StepFailedError`. When every stream of the group failed alone, the model itself is suspect:
the worker reloads it (counted in `model_reloads`) and every slot rebuilds its state on its
next frame. A failed reload fails the worker (`WorkerClosedError` from then on); the pool
then loads a fresh one for the next `acquire`. `status()` counts all of it.

**A dead or stuck worker.** An exception that escapes the thread's loop (a bug, a failing
slot method) fails the worker: every waiting frame and call fails at once with
`WorkerClosedError`, later ones too, and the model is dropped. Every wait on the worker is
bounded: a frame by `frame_timeout_s`, a call by `call_timeout_s`, the first load by
`load_timeout_s`. A wait that runs out means the thread is stuck (a hung kernel, say): the
worker is failed the same way (`WorkerStuckError`), the pool loads a fresh one for the next
`acquire`, and the stuck thread (a daemon) drops the model if it ever comes back.

**Fairness.** Calls run between ticks, but never two in a row while frames are pending: a
session's setup (params, warm-up frames, each its own call) costs the running streams at
most one call's time per tick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import InferenceError, InvalidRequestError
from .preprocessor_batch import run_deferred

if TYPE_CHECKING:
    import torch

    from .stream_batch import DenoiseBackend, StreamState

__all__ = [
    "DEFAULT_FRAME_INTERVAL_S",
    "DiffusionWorker",
    "FrameDroppedError",
    "InvalidFrameError",
    "Job",
    "StepFailedError",
    "WorkerClosedError",
    "WorkerModels",
    "WorkerPool",
    "WorkerSlot",
    "WorkerStuckError",
    "check_frame",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest a tick waits for the sessions of the previous tick (one frame at 30 fps).
DEFAULT_FRAME_INTERVAL_S = 1 / 30
#: Bounds on waits for the worker (see the module docstring).
DEFAULT_FRAME_TIMEOUT_S = 30.0
DEFAULT_CALL_TIMEOUT_S = 300.0
DEFAULT_LOAD_TIMEOUT_S = 900.0
#: Longest one compile child may run (`pipelines.live.precompile`), then it is killed.
DEFAULT_PRECOMPILE_TIMEOUT_S = 1800.0
MAX_FRAME_SIDE = 2048


class InvalidFrameError(InvalidRequestError):
    """A frame the worker cannot batch (dtype, layout, size); only its own session sees it."""


class StepFailedError(InferenceError):
    """This frame's diffusion step failed, also when retried alone."""


class FrameDroppedError(InferenceError):
    """A newer frame of the same session replaced this one before its tick."""


class WorkerClosedError(InferenceError):
    """The worker was closed, or failed and could not reload its model."""


class WorkerStuckError(WorkerClosedError, TimeoutError):
    """A wait on the worker outlived its bound; the worker is failed."""


def check_frame(frame: Any) -> None:
    """Raise `InvalidFrameError` unless `frame` is a CPU `(H, W, 3)` uint8 tensor, H and W
    multiples of 8 in 8..2048 (what the VAE and the batch need)."""
    import torch

    if not isinstance(frame, torch.Tensor):
        raise InvalidFrameError(f"frame must be a torch.Tensor, got {type(frame).__name__}")
    if frame.dtype != torch.uint8:
        raise InvalidFrameError(f"frame dtype must be uint8, got {frame.dtype}")
    if frame.dim() != 3 or frame.shape[2] != 3:
        raise InvalidFrameError(f"frame must be (H, W, 3) RGB, got shape {tuple(frame.shape)}")
    h, w = int(frame.shape[0]), int(frame.shape[1])
    if not (8 <= h <= MAX_FRAME_SIDE and 8 <= w <= MAX_FRAME_SIDE) or h % 8 or w % 8:
        raise InvalidFrameError(f"frame size must be multiples of 8 in 8..{MAX_FRAME_SIDE}, got {w}x{h}")


class WorkerModels(Protocol):
    """What the worker needs of a loaded model."""

    backend: DenoiseBackend
    device: torch.device


@dataclass
class Job:
    """One frame of one session in a tick, as the slot's `begin` prepared it.

    Attributes:
        output: set when the frame needs no model (pass-through, similarity-filter skip).
        image: `(1, 3, H, W)` in [-1, 1] on the model's device.
        state: the stream's state `step` advances.
        sequential: `use_denoising_batch=False`: all steps now, never batched with others.
        deferred: work `begin` left for the tick to run batched across its jobs before the
            step (`preprocessor_batch.Deferred`: depth/pose control images).
    """

    output: torch.Tensor | None = None
    image: torch.Tensor | None = None
    state: StreamState | None = None
    sequential: bool = False
    skipped: bool = False
    deferred: list[Any] = field(default_factory=list)

    def group_key(self) -> tuple[Any, ...]:
        assert self.image is not None and self.state is not None
        return (tuple(self.image.shape), tuple(self.state.cond.shape), self.state.latent_shape)


class WorkerSlot(Protocol):
    """A session's stream as the worker indexes it; every method runs on the worker thread."""

    def begin(self, models: Any, frame: torch.Tensor) -> Job: ...

    def end(self, job: Job, output: torch.Tensor) -> torch.Tensor: ...

    def invalidate(self) -> None:
        """The model was reloaded: rebuild embeddings and state on the next frame."""
        ...


@dataclass
class _Pending:
    frame: torch.Tensor
    future: Future[torch.Tensor]
    arrival: float


@dataclass
class _Item:
    slot_id: int
    slot: WorkerSlot
    job: Job
    future: Future[torch.Tensor]


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Future[Any] = field(default_factory=Future)


class DiffusionWorker:
    """One loaded model, its thread and its sessions' slots (see the module docstring).

    Args:
        key: what the model was loaded from (the pool's key).
        load: builds the model; called on the worker thread (again on a reload).
        device: where `load` puts it; CUDA gets a stream of the worker's own.
        frame_interval_s: the longest a tick waits for the previous tick's sessions.
        warm: optional, called on the worker thread after each (re)load with the models.
        frame_timeout_s, call_timeout_s, load_timeout_s: the bounds on `process`, `call` and
            `wait_loaded` (past them the worker is failed as stuck).
    """

    def __init__(
        self,
        key: str,
        load: Callable[[], WorkerModels],
        *,
        device: Any = "cpu",
        frame_interval_s: float = DEFAULT_FRAME_INTERVAL_S,
        warm: Callable[[WorkerModels], None] | None = None,
        frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
    ) -> None:
        self.key = key
        self.frame_timeout_s = frame_timeout_s
        self.call_timeout_s = call_timeout_s
        self.load_timeout_s = load_timeout_s
        self._load = load
        self._warm = warm
        self.device = device
        self.frame_interval_s = frame_interval_s
        self.models: WorkerModels | None = None
        self._cond = threading.Condition()
        self._slots: dict[int, WorkerSlot] = {}
        self._pending: dict[int, _Pending] = {}
        self._calls: deque[_Call] = deque()
        self._expected: set[int] = set()
        self._next_id = 0
        self._closing = False
        self._failed: BaseException | None = None
        self._loaded: Future[None] = Future()
        #: The tick being computed (its futures fail too if the thread dies or is stuck).
        self._inflight: dict[int, _Pending] = {}
        self._last_was_call = False
        self._thread = threading.Thread(target=self._main, name=f"diffusion-worker-{key[:40]}", daemon=True)
        # figures for status(); written by the worker thread only
        self.backend_name: str | None = None
        self.ticks = 0
        self.frames = 0
        self.frames_rejected = 0
        self.frames_dropped = 0
        self.frames_failed = 0
        self.step_failures = 0
        self.model_reloads = 0
        self.last_error: str | None = None
        self.last_batch = 0
        self.last_wait_ms = 0.0
        #: Ticks per batch size (streams in one UNet call); replaced whole, so readers on other
        #: threads never see it change under them.
        self.batch_sizes: dict[int, int] = {}

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; `wait_loaded` blocks until the model is loaded."""
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until the first load finished (at most `timeout`, default `load_timeout_s`);
        raises what it raised, or `WorkerStuckError`."""
        self._wait(self._loaded, self.load_timeout_s if timeout is None else timeout, "loading the model")

    @property
    def failed(self) -> bool:
        return self._failed is not None

    @property
    def on_worker_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (pending frames and calls fail) and drop the model, waiting at
        most `timeout` for the thread. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive() and not self.on_worker_thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error(
                    "diffusion worker %s: thread still busy %g s after close; left behind as a daemon thread "
                    "(it drops the model if it ever returns)",
                    self.key,
                    timeout,
                )

    def fail(self, exc: BaseException) -> None:
        """Fail the worker now, from any thread: every waiting and later frame and call
        fails with `WorkerClosedError`; the thread drops the model when it next looks."""
        with self._cond:
            if self._failed is None:
                self._failed = exc
            self._closing = True
            self.last_error = repr(exc)
            pending, self._pending = self._pending, {}
            inflight = list(self._inflight.values())
            calls, self._calls = list(self._calls), deque()
            self._cond.notify_all()
        error = _closed_error(exc)
        for p in [*pending.values(), *inflight]:
            _reject(p.future, error)
        for c in calls:
            _reject(c.future, error)
        _reject(self._loaded, error)

    def _wait(self, future: Future[T], timeout: float, what: str) -> T:
        """`future.result(timeout)`; past it the worker is failed as stuck."""
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():  # an error of the call's own that is a TimeoutError
                raise
            error = WorkerStuckError(f"the diffusion worker was stuck for {timeout:g} s ({what})")
            log.error("diffusion worker %s: %s; failing it", self.key, error)
            self.fail(error)
            raise error from None

    # --- sessions ---------------------------------------------------------------------------

    def join(self, slot: WorkerSlot) -> int:
        """Add a session's slot; returns its id. Other sessions are not disturbed."""
        with self._cond:
            self._raise_if_closed()
            self._next_id += 1
            self._slots[self._next_id] = slot
            return self._next_id

    def leave(self, slot_id: int) -> None:
        """Remove a session's slot (its pending frame, if any, fails). Idempotent."""
        with self._cond:
            self._slots.pop(slot_id, None)
            self._expected.discard(slot_id)
            pending = self._pending.pop(slot_id, None)
            self._cond.notify_all()
        if pending is not None:
            _reject(pending.future, WorkerClosedError("the session left the worker"))

    @property
    def sessions(self) -> int:
        return len(self._slots)

    def submit(self, slot_id: int, frame: torch.Tensor) -> Future[torch.Tensor]:
        """Queue the session's newest frame for the next tick; its output comes in the future."""
        future: Future[torch.Tensor] = Future()
        with self._cond:
            self._raise_if_closed()
            if slot_id not in self._slots:
                raise WorkerClosedError(f"slot {slot_id} is not on this worker")
            old = self._pending.get(slot_id)
            self._pending[slot_id] = _Pending(frame, future, time.monotonic())
            self._cond.notify_all()
        if old is not None:
            self.frames_dropped += 1
            _reject(old.future, FrameDroppedError("a newer frame of this session replaced it"))
        return future

    def process(self, slot_id: int, frame: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        """`submit` and wait (at most `timeout`, default `frame_timeout_s`): `(H, W, 3)` uint8
        on the CPU."""
        future = self.submit(slot_id, frame)
        return self._wait(future, self.frame_timeout_s if timeout is None else timeout, "a frame")

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the worker thread between ticks (never two calls in a
        row while frames are pending); returns its result. Waits at most `call_timeout_s`."""
        if self.on_worker_thread:
            return fn(*args, **kwargs)
        call = _Call(fn, args, kwargs)
        with self._cond:
            self._raise_if_closed()
            self._calls.append(call)
            self._cond.notify_all()
        result: T = self._wait(call.future, self.call_timeout_s, f"a call of {getattr(fn, '__name__', fn)!r}")
        return result

    def run_alone(self, slot: WorkerSlot, frame: torch.Tensor) -> torch.Tensor:
        """One frame of one slot through the model now (warm-up); worker thread only."""
        assert self.on_worker_thread, "run_alone runs inside call()"
        assert self.models is not None
        check_frame(frame)
        job = slot.begin(self.models, frame)
        if job.output is not None:
            return slot.end(job, job.output)
        (error,) = run_deferred([job.deferred])
        if error is not None:
            raise error
        (out,) = self._compute([job])
        return slot.end(job, out)

    def status(self) -> dict[str, Any]:
        """Figures for status events (plain attribute reads: safe from any thread)."""
        return {
            "backend": self.backend_name,
            "sessions": len(self._slots),
            "frame_interval_ms": round(self.frame_interval_s * 1000, 1),
            "ticks": self.ticks,
            "frames": self.frames,
            "last_batch": self.last_batch,
            "last_wait_ms": round(self.last_wait_ms, 2),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "frames_rejected": self.frames_rejected,
            "frames_dropped": self.frames_dropped,
            "frames_failed": self.frames_failed,
            "step_failures": self.step_failures,
            "model_reloads": self.model_reloads,
            "last_error": self.last_error,
        }

    def _raise_if_closed(self) -> None:
        if self._failed is not None:
            raise WorkerClosedError(f"the diffusion worker failed: {self._failed!r}")
        if self._closing:
            raise WorkerClosedError("the diffusion worker is closed")

    # --- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        with self._device_stream():
            try:
                self._load_models()
            except BaseException as exc:
                self._failed = exc
                _reject(self._loaded, exc)
                self.models = None
                return
            _resolve(self._loaded, None)
            try:
                self._loop()
            except BaseException as exc:
                # A bug or a failing slot method: fail everything now rather than leave frames
                # that are never answered and a model nobody frees.
                log.exception("diffusion worker %s: the worker loop died; failing the worker", self.key)
                self.fail(exc)
            finally:
                self._shutdown()

    @contextlib.contextmanager
    def _device_stream(self) -> Any:
        import torch

        device = torch.device(self.device)
        if device.type != "cuda":
            yield
            return
        torch.cuda.set_device(device)
        with torch.cuda.stream(torch.cuda.Stream(device)):
            yield

    def _load_models(self) -> None:
        models = self._load()
        self.models = models
        self.backend_name = str(getattr(models.backend, "name", type(models.backend).__name__))
        log.info("diffusion worker %s: backend %s on %s", self.key, self.backend_name, models.device)
        if self._warm is not None:
            self._warm(models)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closing or self._calls or self._pending):
                    self._cond.wait()
                if self._closing:
                    return
                if self._calls and not (self._pending and self._last_was_call):
                    call = self._calls.popleft()
                    batch = None
                else:
                    call = None
                    batch = self._gather()
                    self._inflight = batch
                self._last_was_call = call is not None
            if call is not None:
                if not call.future.set_running_or_notify_cancel():
                    continue
                try:
                    result = call.fn(*call.args, **call.kwargs)
                except BaseException as exc:  # handed to the caller
                    _reject(call.future, exc)
                else:
                    _resolve(call.future, result)
            elif batch:
                self._tick(batch)
                with self._cond:
                    self._inflight = {}

    def _gather(self) -> dict[int, _Pending]:
        """Wait (lock held) for the previous tick's sessions, at most one frame interval
        after the first pending frame; then take every pending frame."""
        first = min(p.arrival for p in self._pending.values())
        deadline = first + self.frame_interval_s
        while not self._closing and not self._expected <= self._pending.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        self.last_wait_ms = (time.monotonic() - first) * 1000
        batch, self._pending = self._pending, {}
        self._expected = set(batch)
        return batch

    def _shutdown(self) -> None:
        with self._cond:
            self._closing = True
            pending, self._pending = self._pending, {}
            inflight, self._inflight = list(self._inflight.values()), {}
            calls, self._calls = list(self._calls), deque()
        error = WorkerClosedError("the diffusion worker closed")
        for p in [*pending.values(), *inflight]:
            _reject(p.future, error)
        for c in calls:
            _reject(c.future, error)
        self.models = None

    # --- one tick ---------------------------------------------------------------------------

    def _tick(self, batch: dict[int, _Pending]) -> None:
        models = self.models
        assert models is not None
        self.ticks += 1
        items: list[_Item] = []
        for slot_id, pending in batch.items():
            slot = self._slots.get(slot_id)
            if slot is None:
                _reject(pending.future, WorkerClosedError("the session left the worker"))
                continue
            try:
                check_frame(pending.frame)
                job = slot.begin(models, pending.frame)
            except Exception as exc:
                # Rejected before the batch: only this session sees it.
                self.frames_rejected += 1
                self.last_error = repr(exc)
                _reject(pending.future, exc)
                continue
            if job.output is not None:
                _resolve(pending.future, slot.end(job, job.output))
                continue
            items.append(_Item(slot_id, slot, job, pending.future))
        # Model-backed preprocessors of every stream, batched; a stream whose call failed is rejected.
        errors = run_deferred([item.job.deferred for item in items])
        for item, error in zip(items, errors, strict=True):
            if error is not None:
                self.frames_rejected += 1
                self.last_error = repr(error)
                _reject(item.future, error)
        items = [item for item, error in zip(items, errors, strict=True) if error is None]
        groups: dict[tuple[Any, ...], list[_Item]] = {}
        for i, item in enumerate(items):
            key = ("sequential", i) if item.job.sequential else item.job.group_key()
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            self._run_group(group)

    def _run_group(self, group: list[_Item]) -> None:
        saved = [_snapshot(item.job.state) for item in group]
        try:
            outputs = self._compute([item.job for item in group])
        except Exception as exc:
            self.step_failures += 1
            self.last_error = repr(exc)
            log.warning("diffusion worker %s: step of %d stream(s) failed: %r", self.key, len(group), exc)
            for item, snap in zip(group, saved, strict=True):
                _restore(item.job.state, snap)
            failed = self._retry_alone(group, exc) if len(group) > 1 else [(group[0], exc)]
            if len(failed) == len(group):
                self._reload(exc)  # before failing the frames: their sessions see the new model
            for item, error in failed:
                self.frames_failed += 1
                err = StepFailedError(f"diffusion step failed: {error!r}")
                err.__cause__ = error
                _reject(item.future, err)
            return
        self.last_batch = len(group)
        self.batch_sizes = {**self.batch_sizes, len(group): self.batch_sizes.get(len(group), 0) + 1}
        for item, out in zip(group, outputs, strict=True):
            self.frames += 1
            _resolve(item.future, item.slot.end(item.job, out))

    def _retry_alone(self, group: list[_Item], first: Exception) -> list[tuple[_Item, Exception]]:
        failed = []
        for item in group:
            snap = _snapshot(item.job.state)
            try:
                (out,) = self._compute([item.job])
            except Exception as exc:
                _restore(item.job.state, snap)
                failed.append((item, exc))
                continue
            self.frames += 1
            _resolve(item.future, item.slot.end(item.job, out))
        return failed

    def _reload(self, cause: Exception) -> None:
        self.model_reloads += 1
        log.error("diffusion worker %s: reloading the model after %r (reload %d)", self.key, cause, self.model_reloads)
        old, self.models = self.models, None
        del old
        try:
            self._load_models()
        except Exception as exc:
            self._failed = exc
            self.last_error = f"model reload failed: {exc!r}"
            log.error("diffusion worker %s: %s", self.key, self.last_error)
            with self._cond:
                self._closing = True
            return
        for slot in list(self._slots.values()):
            slot.invalidate()

    def _compute(self, jobs: Sequence[Job]) -> list[torch.Tensor]:
        """Encode, step and decode jobs of one shape together: `(H, W, 3)` uint8 CPU outputs."""
        import torch

        from .stream_batch import step, step_sequential

        models = self.models
        assert models is not None
        backend = models.backend
        with torch.inference_mode():
            images = torch.cat([job.image for job in jobs if job.image is not None], dim=0)
            latents = backend.encode(images)
            controlnets = getattr(models, "controlnets", None)
            hooks = getattr(models, "hooks", ())
            if len(jobs) == 1 and jobs[0].sequential:
                assert jobs[0].state is not None
                outs = [step_sequential(backend, jobs[0].state, latents, controlnets, hooks)]
            else:
                items = [(job.state, latents[k : k + 1]) for k, job in enumerate(jobs) if job.state is not None]
                outs = step(backend, items, controlnets, hooks)
            decoded = backend.decode(torch.cat(outs, dim=0))
            pixels = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        return list(pixels)


def _resolve(future: Future[T], value: T) -> None:
    """Set a result unless the future is settled already (failed by `fail`, say)."""
    try:
        future.set_result(value)
    except InvalidStateError:
        pass


def _reject(future: Future[Any], exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except InvalidStateError:
        pass


def _closed_error(exc: BaseException) -> WorkerClosedError:
    if isinstance(exc, WorkerClosedError):
        return exc
    error = WorkerClosedError(f"the diffusion worker failed: {exc!r}")
    error.__cause__ = exc
    return error


def _snapshot(state: StreamState | None) -> tuple[Any, ...]:
    # `step` replaces these attributes (never writes into the tensors), so references suffice.
    return (None, None, 0) if state is None else (state.buffer, state.stock, state.frames)


def _restore(state: StreamState | None, snap: tuple[Any, ...]) -> None:
    if state is not None:
        state.buffer, state.stock, state.frames = snap


@dataclass
class _Entry:
    worker: DiffusionWorker
    refs: int


class WorkerPool:
    """One `DiffusionWorker` per loaded model key, shared by every session using it.

    The live registry owns one pool; `acquire` starts (or joins) the worker for a key and
    `release` stops it when its last session is gone.
    """

    def __init__(
        self,
        *,
        frame_interval_s: float = DEFAULT_FRAME_INTERVAL_S,
        compile_streams: tuple[int, ...] = (1, 2, 3, 4),
        frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
        precompile: bool = True,
        precompile_timeout_s: float = DEFAULT_PRECOMPILE_TIMEOUT_S,
    ) -> None:
        self.frame_interval_s = frame_interval_s
        #: The bounds each worker gets (`DiffusionWorker`).
        self.timeouts = {"frame_timeout_s": frame_timeout_s, "call_timeout_s": call_timeout_s, "load_timeout_s": load_timeout_s}
        #: Stream counts a compiled backend compiles ahead for (the batch sizes in use).
        self.compile_streams = compile_streams
        #: Inductor compiles for a new size run in a child process first (`precompile`), each
        #: bounded by `precompile_timeout_s`: the running streams never wait on the GIL for them.
        self.precompile = precompile
        self.precompile_timeout_s = precompile_timeout_s
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def acquire(
        self,
        key: str,
        load: Callable[[], WorkerModels],
        *,
        device: Any = "cpu",
        warm: Callable[[WorkerModels], None] | None = None,
    ) -> DiffusionWorker:
        """The worker for `key`, loading the model (on the worker's thread) if none is."""
        created = False
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.worker.failed or entry.worker._closing:
                worker = DiffusionWorker(
                    key, load, device=device, frame_interval_s=self.frame_interval_s, warm=warm, **self.timeouts
                )
                entry = self._entries[key] = _Entry(worker, 0)
                created = True
            entry.refs += 1
            worker = entry.worker
        if created:
            worker.start()
        try:
            worker.wait_loaded()
        except BaseException:
            self.release(worker)
            raise
        return worker

    def release(self, worker: DiffusionWorker) -> None:
        """One session fewer on `worker`; the last one closes it."""
        with self._lock:
            entry = self._entries.get(worker.key)
            if entry is None or entry.worker is not worker:
                close = True
            else:
                entry.refs -= 1
                close = entry.refs <= 0
                if close:
                    del self._entries[worker.key]
        if close:
            worker.close()

    def workers(self) -> list[DiffusionWorker]:
        with self._lock:
            return [e.worker for e in self._entries.values()]

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.worker.close()
