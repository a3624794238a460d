"""Task name + model id -> a loaded batch pipeline; one job at a time per model.

The registry is what the API awaits. For each (task, model id) it keeps one slot:

- the model is loaded lazily, in a worker thread, on the first request; concurrent first
  requests share that one load; a failed load is remembered for `load_retry_after` seconds
  (every request in that time gets the same `ModelLoadError` at once, without touching the
  disk or the Hub again), then the next request tries again;
- jobs run in a worker thread one at a time per model, in arrival order; at most `max_queue`
  more requests may wait (for the load or for the running job); beyond that
  `PipelineBusyError` (503) answers at once instead of a hang;
- loading another model id for a task first unloads that task's idle models (closed, memory
  returned, CUDA cache emptied); a model with a job running or waiting stays until the next switch;
- a waiter that is cancelled (client gone) leaves the queue; a job already running in its
  thread is told to stop (`pipelines.cancel`: diffusion pipelines stop at the next step), and
  the model is not handed to the next job before its thread has returned. `cancel_all()`
  (engine shutdown) tells every running job to stop.

In runner mode (`pinned`, ai-runner's PIPELINE/MODEL_ID) the pinned model is preloaded by
`start()` and `health` follows that load as ai-runner's `/health` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from .cancel import cancel_scope
from .errors import (
    InferenceError,
    ModelLoadError,
    ModelMismatchError,
    ModelNotFoundError,
    PipelineBusyError,
    PipelineError,
    PipelineNotAvailableError,
)
from .progress import Progress
from .threads import DaemonThreadPool

__all__ = ["BATCH_TASKS", "DEFAULT_MODEL_IDS", "IMPLEMENTATIONS", "Health", "PipelineFactory", "PipelineRegistry"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Health = Literal["LOADING", "OK", "IDLE", "ERROR"]
#: Builds a loaded pipeline: `factory(model_id, model_dir)`; runs in a worker thread.
PipelineFactory = Callable[[str, Path | None], Any]

#: The runner API's batch tasks (routes).
BATCH_TASKS: tuple[str, ...] = (
    "text-to-image",
    "image-to-image",
    "image-to-video",
    "upscale",
    "audio-to-text",
    "segment-anything-2",
    "llm",
    "image-to-text",
    "text-to-speech",
)

#: Batch tasks with an implementation: task -> "module:Class", imported on first load.
#: The class is constructed as `Class(model_id, model_dir=model_dir)`.
IMPLEMENTATIONS: dict[str, str] = {
    "text-to-image": "pipelines.batch.text_to_image:TextToImagePipeline",
    "image-to-image": "pipelines.batch.image_to_image:ImageToImagePipeline",
    "image-to-video": "pipelines.batch.image_to_video:ImageToVideoPipeline",
    "upscale": "pipelines.batch.upscale:UpscalePipeline",
    "llm": "pipelines.llm.pipeline:LLMPipeline",
    "audio-to-text": "pipelines.batch.audio_to_text:AudioToTextPipeline",
    "text-to-speech": "pipelines.batch.text_to_speech:TextToSpeechPipeline",
    "image-to-text": "pipelines.batch.image_to_text:ImageToTextPipeline",
    "segment-anything-2": "pipelines.batch.segment_anything_2:SegmentAnything2Pipeline",
}

#: go-livepeer's default model per task (`server/ai_process.go`), used when a request names none.
DEFAULT_MODEL_IDS: dict[str, str] = {
    "text-to-image": "stabilityai/sdxl-turbo",
    "image-to-image": "stabilityai/sdxl-turbo",
    "image-to-video": "stabilityai/stable-video-diffusion-img2vid-xt",
    "upscale": "stabilityai/stable-diffusion-x4-upscaler",
    "audio-to-text": "openai/whisper-large-v3",
    "llm": "meta-llama/llama-3.1-8B-Instruct",
    "segment-anything-2": "facebook/sam2-hiera-large",
    "image-to-text": "Salesforce/blip-image-captioning-large",
    "text-to-speech": "parler-tts/parler-tts-large-v1",
    "live-video-to-video": "noop",
}


def _import_factory(spec: str) -> PipelineFactory:
    module_name, _, class_name = spec.partition(":")

    def factory(model_id: str, model_dir: Path | None) -> Any:
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(model_id, model_dir=model_dir)

    return factory


class _Slot:
    """One (task, model id): its pipeline, its load, its job lock and its queue count."""

    def __init__(self, task: str, model_id: str) -> None:
        self.task = task
        self.model_id = model_id
        self.pipeline: Any = None
        self.load: asyncio.Task[Any] | None = None
        self.load_failed = False
        #: The last load's error and when it happened (monotonic), for the negative cache.
        self.failure: ModelLoadError | None = None
        self.failed_at = 0.0
        #: Seconds the last successful load took (None until loaded).
        self.load_seconds: float | None = None
        #: Held by the running job from submission until its thread returns.
        self.lock = asyncio.Lock()
        #: Requests admitted: the running job plus those waiting for the load or the lock.
        self.admitted = 0

    def __repr__(self) -> str:
        return f"<{self.task} {self.model_id!r}>"


class PipelineRegistry:
    """Loads batch pipelines on demand and runs their jobs, one at a time per model.

    Args:
        model_dir: ai-runner's MODEL_DIR (local models, Hugging Face cache).
        default_models: task -> model id for requests that name none.
        pinned: `(task, model_id)` in runner mode (one ai-runner container), else `None`.
        max_queue: requests that may wait per model while one runs (0: none wait).
        factories: task -> factory, replacing the built-in `IMPLEMENTATIONS` (tests, plug-ins).
        load_retry_after: seconds a failed load is remembered before a request tries again.
        close_timeout_s: how long `aclose` waits for running jobs' threads to return.
        progress_interval: seconds between the log lines of a load still running (`pipelines.progress`).
    """

    def __init__(
        self,
        *,
        model_dir: Path | None,
        default_models: Mapping[str, str],
        pinned: tuple[str, str] | None,
        max_queue: int,
        factories: Mapping[str, PipelineFactory] | None = None,
        load_retry_after: float = 30.0,
        close_timeout_s: float = 5.0,
        progress_interval: float = 5.0,
    ) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}.")
        self._model_dir = model_dir
        self._default_models = dict(default_models)
        self._pinned = pinned
        self._max_queue = max_queue
        self._load_retry_after = load_retry_after
        self._progress_interval = progress_interval
        #: Cancellation flags of the jobs running in threads now.
        self._running: set[threading.Event] = set()
        if factories is None:
            factories = {task: _import_factory(spec) for task, spec in IMPLEMENTATIONS.items()}
        self._factories = dict(factories)
        self._slots: dict[tuple[str, str], _Slot] = {}
        #: Daemon threads `pipeline_{n}`: a job stuck in a model never holds the process's exit.
        self._executor = DaemonThreadPool(thread_name_prefix="pipeline", shutdown_timeout_s=close_timeout_s)
        self._preload: asyncio.Task[None] | None = None
        self._closed = False

    # -- model ids -------------------------------------------------------------------------

    def resolve_model_id(self, task: str, requested: str) -> str:
        """The model a request for `task` runs on.

        In runner mode, for the pinned task: the pinned model, and a different non-empty
        `requested` raises `ModelMismatchError` (ai-runner's 400). Otherwise `requested`, else
        the configured default for the task, else go-livepeer's default.
        """
        requested = requested.strip()
        if self._pinned is not None and task == self._pinned[0]:
            pinned_model = self._pinned[1]
            if requested and requested != pinned_model:
                raise ModelMismatchError(f"pipeline configured with {pinned_model} but called with {requested}")
            return pinned_model
        if requested:
            return requested
        model_id = self._default_models.get(task) or DEFAULT_MODEL_IDS.get(task)
        if not model_id:
            raise PipelineNotAvailableError(f"pipeline not available: unknown task {task!r}")
        return model_id

    def is_available(self, task: str) -> bool:
        """`task` has an implementation (else `run` raises `PipelineNotAvailableError`)."""
        return task in self._factories

    # -- health and lifecycle --------------------------------------------------------------

    @property
    def health(self) -> Health:
        """ai-runner's `/health` status for the batch side.

        Runner mode with a batch task: LOADING until the pinned model is loaded, then OK, or
        ERROR when its load failed (a later successful load returns it to OK). Otherwise OK:
        models load on demand. (Live pipelines report their own state.)
        """
        if self._pinned is None or self._pinned[0] not in BATCH_TASKS:
            return "OK"
        if not self.is_available(self._pinned[0]):
            return "ERROR"
        slot = self._slots.get(self._pinned)
        if slot is not None and slot.pipeline is not None:
            return "OK"
        if slot is not None and slot.load_failed:
            return "ERROR"
        return "LOADING"

    def stats(self) -> list[dict[str, Any]]:
        """One row per known (task, model id), for `/metrics`: loaded, loading, busy, queued, load time."""
        rows = []
        for slot in list(self._slots.values()):
            busy = 1 if slot.lock.locked() else 0
            rows.append(
                {
                    "task": slot.task,
                    "model_id": slot.model_id,
                    "loaded": slot.pipeline is not None,
                    "loading": slot.load is not None and not slot.load.done(),
                    "load_failed": slot.load_failed,
                    "busy": busy,
                    "queued": max(0, slot.admitted - busy),
                    "load_seconds": slot.load_seconds,
                }
            )
        return rows

    async def start(self) -> None:
        """Begin preloading the pinned model in a background task the registry owns."""
        if self._pinned is None or self._preload is not None:
            return
        task, model_id = self._pinned
        if task not in BATCH_TASKS:
            return
        if not self.is_available(task):
            log.error("pipeline not available: no %s pipeline is implemented in this engine yet", task)
            return
        self._preload = asyncio.create_task(self._preload_pinned(task, model_id), name=f"preload {task} {model_id}")

    async def wait_preloaded(self) -> None:
        """Wait until `start()`'s preload of the pinned model has ended (loaded, or failed: ERROR)."""
        if self._preload is not None:
            # As long as the load (no bound of its own, as ai-runner: go-livepeer gives a LOADING
            # runner `containerTimeout`, then replaces it); `aclose` cancels it.
            await asyncio.wait({self._preload})

    async def _preload_pinned(self, task: str, model_id: str) -> None:
        with contextlib.suppress(ModelLoadError):  # logged by _load; health says ERROR
            await self._loaded(self._slot(task, model_id), self._factories[task])

    def cancel_all(self) -> int:
        """Tell every running job to stop at its next step; returns how many were told."""
        for event in self._running:
            event.set()
        return len(self._running)

    async def aclose(self) -> None:
        """Stop loading, forget every model, tell running jobs to stop and wait (at most
        `close_timeout_s`) for their threads to return."""
        if self._closed:
            return
        self._closed = True
        self.cancel_all()
        tasks = [t for t in [self._preload, *(s.load for s in self._slots.values())] if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, PipelineError):  # load errors are logged by _load
                await t  # bounded: cancelled, each only awaits its thread's future
        self._slots.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        # Jobs were told to stop: give them `close_timeout_s` to return their model, then name
        # the stuck ones (daemon threads: they end with the process, never hold its exit).
        stuck = await self._executor.ajoin(self._executor.shutdown_timeout_s)
        if stuck:
            log.warning("registry closed with %d job thread(s) still running: %s", len(stuck), ", ".join(stuck))

    # -- running jobs ----------------------------------------------------------------------

    async def run(self, task: str, model_id: str, call: Callable[[Any], T]) -> T:
        """Run `call(pipeline)` in a worker thread on the loaded model of (task, model_id).

        Raises:
            PipelineNotAvailableError: no implementation for `task`.
            PipelineBusyError: the model's queue is full.
            ModelLoadError: the model cannot be loaded.
            InvalidRequestError: `call` rejected the request (any `PipelineError` passes through).
            InferenceError: `call` raised anything else (traceback in the log).

        No timeout, deliberately: ai-runner's batch routes have none (the caller's HTTP client
        owns the request's deadline). Cancelling this await (the client left) sets the job's
        cancellation flag (`pipelines.cancel`), which diffusion pipelines check at every step;
        admission bounds what a model holds meanwhile: one job running and `max_queue` waiting,
        later requests get 503 at once.
        """
        factory = self._factory_for(task)
        slot = self._slot(task, model_id)
        if slot.admitted >= 1 + self._max_queue:
            raise PipelineBusyError(
                f"{task} model {model_id} is busy: one request is running and {self._max_queue} are waiting; "
                "try again later"
            )
        slot.admitted += 1
        submitted = False
        try:
            pipeline = await self._loaded(slot, factory)
            await slot.lock.acquire()  # queued behind at most `max_queue` others (admission above)
            cancel = threading.Event()
            try:
                job = self._executor.submit(self._invoke, slot, call, pipeline, cancel)
            except BaseException:
                slot.lock.release()
                raise
            submitted = True
            self._running.add(cancel)
            loop = asyncio.get_running_loop()
            job.add_done_callback(lambda _: self._call_soon(loop, self._job_done, slot))
            job.add_done_callback(lambda _: self._running.discard(cancel))
            try:
                return await asyncio.wrap_future(job)
            except asyncio.CancelledError:
                # The client left: the thread stops at its next step; the slot stays locked until it returns.
                cancel.set()
                raise
        finally:
            if not submitted:
                slot.admitted -= 1

    @contextlib.asynccontextmanager
    async def acquire(self, task: str, model_id: str) -> AsyncIterator[Any]:
        """Hold (task, model_id)'s turn for a job the caller drives itself, e.g. a token stream.

        Yields the loaded pipeline once the request's turn comes; the turn passes on when the
        block exits, so the block must not exit before the job has stopped (the LLM stream
        returns only once its thread is idle). Admission, queueing and errors are `run`'s. A
        pipeline with a `concurrency` above 1 (it batches requests itself, as vLLM does) serves
        that many blocks at once, plus `max_queue` waiting.
        """
        factory = self._factory_for(task)
        slot = self._slot(task, model_id)
        concurrency = max(1, getattr(slot.pipeline, "concurrency", 1)) if slot.pipeline is not None else 1
        if slot.admitted >= concurrency + self._max_queue:
            raise PipelineBusyError(
                f"{task} model {model_id} is busy: {concurrency} request(s) running and {self._max_queue} waiting; "
                "try again later"
            )
        slot.admitted += 1
        try:
            pipeline = await self._loaded(slot, factory)
            if getattr(pipeline, "concurrency", 1) > 1:
                yield pipeline
            else:
                async with slot.lock:
                    yield pipeline
        finally:
            slot.admitted -= 1

    def _factory_for(self, task: str) -> PipelineFactory:
        factory = self._factories.get(task)
        if factory is None:
            if task in BATCH_TASKS:
                raise PipelineNotAvailableError(
                    f"pipeline not available: no {task} pipeline is implemented in this engine yet"
                )
            raise PipelineNotAvailableError(f"pipeline not available: unknown task {task!r}")
        if self._closed:
            raise PipelineNotAvailableError("pipeline not available: the engine is shutting down")
        return factory

    @staticmethod
    def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[_Slot], None], slot: _Slot) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(fn, slot)

    @staticmethod
    def _job_done(slot: _Slot) -> None:
        slot.admitted -= 1
        slot.lock.release()

    @staticmethod
    def _invoke(slot: _Slot, call: Callable[[Any], T], pipeline: Any, cancel: threading.Event) -> T:
        try:
            with cancel_scope(cancel):
                return call(pipeline)
        except PipelineError:
            raise
        except Exception as exc:
            log.exception("%s model %s failed while running", slot.task, slot.model_id)
            torch = sys.modules.get("torch")
            if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
                raise InferenceError(f"{slot.task} pipeline ran out of GPU memory") from exc
            raise InferenceError(f"{slot.task} pipeline error") from exc

    # -- loading ---------------------------------------------------------------------------

    def _slot(self, task: str, model_id: str) -> _Slot:
        slot = self._slots.get((task, model_id))
        if slot is None:
            slot = self._slots[(task, model_id)] = _Slot(task, model_id)
        return slot

    async def _loaded(self, slot: _Slot, factory: PipelineFactory) -> Any:
        """The slot's pipeline, loading it (once, shared by all waiters) if needed."""
        if slot.pipeline is not None:
            return slot.pipeline
        if slot.load is None and slot.failure is not None:
            if time.monotonic() - slot.failed_at < self._load_retry_after:
                raise slot.failure  # the negative cache: no new load, no new log line
            slot.failure = None
        if slot.load is None:
            evicted = self._evict_others(slot)
            slot.load = asyncio.create_task(
                self._load(slot, factory, evicted), name=f"load {slot.task} {slot.model_id}"
            )
            slot.load.add_done_callback(_consume_exception)
        load = slot.load
        # asyncio.wait, not await: a cancelled waiter must not cancel the load the others share.
        # As long as the load, as `wait_preloaded` (no load timeout, as ai-runner).
        await asyncio.wait({load})
        return load.result()

    def _evict_others(self, slot: _Slot) -> list[Any]:
        """Forget the idle loaded models of `slot`'s task: switching model id unloads the old one.

        A model with a job running or waiting is kept (it goes at the next switch). Returns the
        pipelines to release, which `_load` does in a worker thread before loading the new one.
        """
        evicted: list[Any] = []
        for key, other in list(self._slots.items()):
            if other is slot or other.task != slot.task or other.pipeline is None:
                continue
            if other.admitted or other.lock.locked() or key == self._pinned:
                continue
            log.info("unloading %s model %s for %s", other.task, other.model_id, slot.model_id)
            evicted.append(other.pipeline)
            other.pipeline = None
            del self._slots[key]
        return evicted

    async def _load(self, slot: _Slot, factory: PipelineFactory, evicted: list[Any] | None = None) -> Any:
        if evicted:
            # Bounded by the work: `close()` of idle pipelines, then a garbage collection.
            await asyncio.wrap_future(self._executor.submit(_release, evicted))
        log.info("loading %s model %s", slot.task, slot.model_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # A download or a big load logs how long it has run every few seconds (HF's own bars
            # show on a terminal only).
            progress = Progress(f"{slot.task} {slot.model_id}", interval=self._progress_interval)
            pipeline = await asyncio.wrap_future(
                self._executor.submit(_load_in_stage, progress, factory, slot.model_id, self._model_dir)
            )
        except ModelLoadError as exc:
            log.error("could not load %s model %s: %s", slot.task, slot.model_id, exc)
            # The same words for every route: which model, then why.
            worded = type(exc)(f"could not load {slot.task} model {slot.model_id}: {exc}")
            self._load_failed(slot, worded)
            raise worded from exc.__cause__
        except Exception as exc:
            # One line: the cause is usually the deployment (missing files, no network); the
            # traceback is there at DEBUG for the rest.
            log.error("could not load %s model %s: %s: %s", slot.task, slot.model_id, type(exc).__name__, exc)
            log.debug("load traceback", exc_info=exc)
            cls = ModelNotFoundError if _names_no_model(exc) else ModelLoadError
            error = cls(f"could not load {slot.task} model {slot.model_id}: {exc}")
            error.__cause__ = exc
            self._load_failed(slot, error)
            raise error from exc
        slot.pipeline = pipeline
        slot.load_failed = False
        slot.load_seconds = loop.time() - started
        log.info("loaded %s model %s in %.1f s", slot.task, slot.model_id, loop.time() - started)
        return pipeline

    @staticmethod
    def _load_failed(slot: _Slot, error: ModelLoadError) -> None:
        slot.load_failed = True
        slot.load = None  # the next request after `load_retry_after` tries again
        slot.failure = error
        slot.failed_at = time.monotonic()


def _load_in_stage(progress: Progress, factory: PipelineFactory, model_id: str, model_dir: Path | None) -> Any:
    with progress.stage("load"):
        return factory(model_id, model_dir)


def _names_no_model(exc: BaseException) -> bool:
    """The Hub answered that the repository does not exist (somewhere in `exc`'s chain)."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _release(pipelines: list[Any]) -> None:
    """Close unloaded pipelines and return their memory (GPU memory included) before a new load."""
    import gc

    for pipeline in pipelines:
        close = getattr(pipeline, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                log.exception("closing %r failed", pipeline)
    pipelines.clear()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _consume_exception(task: asyncio.Task[Any]) -> None:
    # Every waiter reads the result; this only keeps asyncio quiet when all of them were cancelled.
    if not task.cancelled():
        task.exception()
