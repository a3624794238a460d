"""The GPU worker on the tiny model (CPU): cross-stream batching equals running alone, sessions
join and leave mid-stream, one stream's params and bad frames stay its own, failed steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import torch
from sd_helpers import apply_params, frames_of

from pipelines.live.diffusion_worker import (
    DiffusionWorker,
    InvalidFrameError,
    StepFailedError,
    WorkerPool,
)
from pipelines.live.streamdiffusion import StreamDiffusionPipeline
from pipelines.live.streamdiffusion_params import StreamDiffusionParams

FRAMES = frames_of(11, count=6)
BASE = dict(t_index_list=[20, 35], cfg_type="self", guidance_scale=1.4, width=64, height=64)


@pytest.fixture
def open_pipeline(tiny_sd_dir: Path) -> Iterator[Callable[..., StreamDiffusionPipeline]]:
    """`open_pipeline(pool, **params)`: a loaded pipeline on `pool` (None: a pool of its own)."""
    made: list[StreamDiffusionPipeline] = []

    def make(pool: WorkerPool | None, **params: Any) -> StreamDiffusionPipeline:
        pipe = StreamDiffusionPipeline(device="cpu", pool=pool)
        pipe.load(StreamDiffusionParams(model_id=str(tiny_sd_dir), **{**BASE, **params}))
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        pipe.close()


def _alone(open_pipeline: Callable[..., StreamDiffusionPipeline], frames: torch.Tensor, **params: Any) -> list[torch.Tensor]:
    """The stream run by itself: its own pool, its own model."""
    pipe = open_pipeline(None, **params)
    outs = [pipe.process(f[None])[0] for f in frames]
    pipe.close()
    return outs


def _hold(worker: DiffusionWorker) -> threading.Event:
    """Park the worker thread in a call until the returned event is set, so frames submitted
    meanwhile all land in the next tick."""
    gate, parked = threading.Event(), threading.Event()

    def park() -> None:
        parked.set()
        gate.wait(30)

    threading.Thread(target=worker.call, args=(park,), daemon=True).start()
    assert parked.wait(30)
    return gate


def _tick(pipes: list[StreamDiffusionPipeline], frames: list[torch.Tensor]) -> list[Future[torch.Tensor]]:
    """One tick with a frame from each pipeline (all on one worker)."""
    worker = pipes[0]._worker
    assert worker is not None
    gate = _hold(worker)
    futures = [worker.submit(p._slot_id, f) for p, f in zip(pipes, frames, strict=True)]
    gate.set()
    for f in futures:
        f.exception(60)
    return futures


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # Batched and single convolutions may round differently in the last float bit.
    d = (a.float() - b.float()).abs()
    assert float(d.max()) <= 2 and float(d.mean()) < 0.05, (float(d.max()), float(d.mean()))


class _Recording:
    """Wraps a backend: records batch sizes, and raises when `fail(sample, t, embeds)` says so."""

    def __init__(self, inner: Any, fail: Callable[..., bool] | None = None) -> None:
        self.inner, self.fail = inner, fail
        self.name = inner.name
        self.unet_rows: list[int] = []
        self.encoded: list[int] = []

    def unet(self, sample: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        if self.fail is not None and self.fail(sample, t, embeds):
            raise RuntimeError("injected UNet failure")
        self.unet_rows.append(sample.shape[0])
        return self.inner.unet(sample, t, embeds)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.encoded.append(images.shape[0])
        return self.inner.encode(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(latents)


def _wrap(pipe: StreamDiffusionPipeline, fail: Callable[..., bool] | None = None) -> _Recording:
    worker = pipe._worker
    assert worker is not None and worker.models is not None
    rec = _Recording(worker.models.backend, fail)

    def swap() -> None:
        assert worker.models is not None
        worker.models.backend = rec

    worker.call(swap)
    return rec


def test_batched_streams_match_running_alone(open_pipeline: Any) -> None:
    specs = [dict(prompt="a cat", seed=1), dict(prompt="fire", seed=2, cfg_type="full"), dict(prompt="snow", seed=3)]
    alone = [_alone(open_pipeline, FRAMES[:4], **s) for s in specs]
    pool = WorkerPool()
    pipes = [open_pipeline(pool, **s) for s in specs]
    worker = pipes[0]._worker
    assert all(p._worker is worker for p in pipes) and worker is not None and worker.sessions == 3
    rec = _wrap(pipes[0])
    for i in range(4):
        futures = _tick(pipes, [FRAMES[i]] * 3)
        for k, fut in enumerate(futures):
            _close(fut.result(), alone[k][i])
    # One encode of 3 images and one UNet call for all rows (2 + 4 + 2) per tick.
    assert rec.encoded == [3] * 4 and rec.unet_rows == [8] * 4
    st = pipes[1].status()["worker"]
    assert st["backend"] == "eager" and st["sessions"] == 3 and st["batch_sizes"] == {"3": 4}


def test_sessions_in_threads_are_batched_and_a_tick_waits_at_most_one_interval(open_pipeline: Any) -> None:
    pool = WorkerPool(frame_interval_s=0.2)
    a, b = open_pipeline(pool, seed=1), open_pipeline(pool, seed=2)
    alone = _alone(open_pipeline, FRAMES[:3], seed=2)
    outs: list[torch.Tensor] = []
    worker = a._worker
    assert worker is not None
    thread = threading.Thread(target=lambda: [a.process(f[None]) for f in FRAMES[:3]])
    thread.start()
    outs = [b.process(f[None])[0] for f in FRAMES[:3]]
    thread.join(60)
    for out, ref in zip(outs, alone, strict=True):
        _close(out, ref)
    assert worker.batch_sizes.get(2, 0) >= 1  # the two sessions' frames shared ticks
    # After a tick with both, b stops sending: a's next tick waits for b, at most one interval.
    _tick([a, b], [FRAMES[3], FRAMES[3]])
    started = time.monotonic()
    a.process(FRAMES[3:4])
    took = time.monotonic() - started
    assert 150 <= worker.last_wait_ms <= 200 + 150 and took >= 0.15
    # Alone again (b was not in the last tick): no waiting.
    a.process(FRAMES[4:5])
    assert worker.last_wait_ms < 50


def test_join_and_leave_mid_stream_do_not_disturb_others(open_pipeline: Any) -> None:
    alone = _alone(open_pipeline, FRAMES, prompt="a cat", seed=5)
    pool = WorkerPool()
    a = open_pipeline(pool, prompt="a cat", seed=5)
    outs = [a.process(FRAMES[i : i + 1])[0] for i in range(2)]
    b = open_pipeline(pool, prompt="fire", seed=6, t_index_list=[10, 25, 40])  # joins (and warms up)
    assert b._worker is a._worker and a._worker is not None and a._worker.sessions == 2
    for i in (2, 3):
        fa, _ = _tick([a, b], [FRAMES[i], FRAMES[5 - i]])
        outs.append(fa.result())
    b.close()  # leaves mid-stream
    assert a._worker.sessions == 1
    outs += [a.process(FRAMES[i : i + 1])[0] for i in (4, 5)]
    for out, ref in zip(outs, alone, strict=True):
        _close(out, ref)


def test_param_update_of_one_stream_leaves_the_others_untouched(open_pipeline: Any) -> None:
    alone = _alone(open_pipeline, FRAMES, prompt="a cat", seed=7)
    pool = WorkerPool()
    a = open_pipeline(pool, prompt="a cat", seed=7)
    b = open_pipeline(pool, prompt="snow", seed=8)
    outs_a, outs_b = [], []
    for i in range(6):
        if i == 2:
            assert b.params is not None
            b.update_params(b.params.model_copy(update={"prompt": "fire", "seed": 99, "t_index_list": [5, 15, 45]}))
        if i == 4:
            assert b.params is not None
            b.update_params(b.params.model_copy(update={"guidance_scale": 3.0, "cfg_type": "initialize"}))
        fa, fb = _tick([a, b], [FRAMES[i], FRAMES[i]])
        outs_a.append(fa.result())
        outs_b.append(fb.result())
    for out, ref in zip(outs_a, alone, strict=True):
        _close(out, ref)
    assert b.status()["unet_batch"] == 4 and a.status()["unet_batch"] == 2
    assert float((outs_b[3].float() - outs_a[3].float()).abs().mean()) > 1


def test_bad_frame_never_reaches_the_batch(open_pipeline: Any) -> None:
    specs = [dict(seed=1), dict(seed=2), dict(seed=3)]
    alone = [_alone(open_pipeline, FRAMES[:1], **s)[0] for s in specs]
    pool = WorkerPool()
    a, b, c = (open_pipeline(pool, **s) for s in specs)
    rec = _wrap(a)
    bad = [FRAMES[0].float(), FRAMES[0, :, :, :2], FRAMES[0, :60, :60], FRAMES[0].numpy()]
    for i, frame in enumerate(bad):
        fa, fb, fc = _tick([a, b, c], [FRAMES[0], frame, FRAMES[0]])
        assert isinstance(fb.exception(), InvalidFrameError), fb.exception()
        if i == 0:
            _close(fa.result(), alone[0])
            _close(fc.result(), alone[2])
    # Only the good streams' frames were encoded and denoised.
    assert rec.encoded == [2] * 4 and rec.unet_rows == [4] * 4
    worker = a._worker
    assert worker is not None and worker.frames_rejected == 4 and worker.step_failures == 0
    with pytest.raises(InvalidFrameError):
        b.process(FRAMES[:1, :, :, :2])
    _close(b.process(FRAMES[:1])[0], alone[1])  # b's stream goes on with its first real frame


def test_failing_step_fails_only_what_it_must_and_reloads_the_model(open_pipeline: Any) -> None:
    pool = WorkerPool()
    a = open_pipeline(pool, prompt="a cat", seed=1)
    b = open_pipeline(pool, prompt="poison", seed=2)
    alone_a = _alone(open_pipeline, FRAMES[:3], prompt="a cat", seed=1)
    worker = a._worker
    assert worker is not None
    loaded = worker.models

    # 1. Fails batched, works alone (e.g. out of memory at the bigger batch): nobody loses a frame.
    _wrap(a, fail=lambda sample, t, e: sample.shape[0] > 2)
    fa, fb = _tick([a, b], [FRAMES[0], FRAMES[0]])
    _close(fa.result(), alone_a[0])
    assert fb.exception() is None
    assert (worker.step_failures, worker.frames_failed, worker.model_reloads) == (1, 0, 0)

    # 2. One stream's rows fail even alone: only its frame fails, the model stays.
    poison = b._embed("poison")
    _wrap(a, fail=lambda sample, t, e: bool((e == poison).flatten(1).all(1).any()))
    fa, fb = _tick([a, b], [FRAMES[1], FRAMES[1]])
    _close(fa.result(), alone_a[1])
    assert isinstance(fb.exception(), StepFailedError)
    assert (worker.step_failures, worker.frames_failed, worker.model_reloads) == (2, 1, 0)
    assert worker.models is loaded

    # 3. Everything fails: the tick's frames fail, the model is reloaded, streams go on.
    _wrap(a, fail=lambda *_: True)
    fa, fb = _tick([a, b], [FRAMES[2], FRAMES[2]])
    assert isinstance(fa.exception(), StepFailedError) and isinstance(fb.exception(), StepFailedError)
    assert worker.model_reloads == 1 and worker.models is not loaded and not worker.failed
    st = a.status()["worker"]
    assert st["model_reloads"] == 1 and st["frames_failed"] == 3 and "injected UNet failure" in st["last_error"]
    fa, fb = _tick([a, b], [FRAMES[2], FRAMES[2]])
    assert fa.exception() is None and fb.exception() is None
    assert float(fa.result().float().std()) > 8  # a picture, re-primed from this frame


def test_pool_shares_one_worker_per_model_and_stops_it_with_the_last_session(open_pipeline: Any) -> None:
    pool = WorkerPool()
    a = open_pipeline(pool)
    b = open_pipeline(pool, prompt="other", seed=4)  # live params: same model, same worker
    c = open_pipeline(pool, use_tiny_vae=False)  # another model: another worker
    assert a._worker is b._worker and c._worker is not a._worker and len(pool.workers()) == 2
    worker = a._worker
    assert worker is not None
    assert b.params is not None
    apply_params(b, b.params.model_copy(update={"use_tiny_vae": False}))  # moves to c's worker
    assert b._worker is c._worker and b.status()["reloads"] == 1 and worker.sessions == 1
    a.close()
    assert worker.failed is False and len(pool.workers()) == 1 and not worker._thread.is_alive()
    _ = b.process(FRAMES[:1])


@pytest.mark.slow
def test_compile_backend_matches_eager(open_pipeline: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """`acceleration="compile"` end to end through the worker. Dynamo's `aot_eager` stands in
    for Inductor here (Inductor takes minutes per graph on this CPU; the benchmark measures it)."""
    monkeypatch.setenv("LIVESTREAM_TORCH_COMPILER", "aot_eager")
    alone = _alone(open_pipeline, FRAMES[:2], seed=3)
    pool = WorkerPool(compile_streams=(1,))
    pipe = open_pipeline(pool, seed=3, acceleration="compile")
    st = pipe.status()
    assert st["backend"] == "compile" and st["worker"]["backend"] == "compile"
    m = pipe._models
    assert m is not None
    compiled = getattr(m.backend, "compiled")
    assert ("unet", (2, 4, 8, 8)) in compiled and ("encode", (1, 3, 64, 64)) in compiled
    caplog.set_level("WARNING", logger="pipelines.live.stream_backends")
    for frame, ref in zip(FRAMES[:2], alone, strict=True):
        _close(pipe.process(frame[None])[0], ref)
    assert "not compiled ahead" not in caplog.text


def test_a_compile_failure_fails_the_load(open_pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.errors import ModelLoadError
    from pipelines.live.stream_backends import BackendError, make_backend

    monkeypatch.setenv("LIVESTREAM_TORCH_COMPILER", "no-such-compiler")
    with pytest.raises(ModelLoadError):  # BackendError: never a silent fallback to eager
        open_pipeline(WorkerPool(), acceleration="compile")
    with pytest.raises(BackendError):
        make_backend("tensorrt", None, None, torch.device("cpu"))
