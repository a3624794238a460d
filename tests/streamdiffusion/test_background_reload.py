"""A model reload off the frame path (issue 22): the stream keeps answering frames while the
new model loads in the background, shows its last output dimmed with `show_reloading_frame`,
switches once the load is done, and keeps its params when the load fails."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from sd_helpers import apply_params, frames_of

from pipelines.errors import ModelLoadError
from pipelines.live.background_reload import BackgroundLoad, reloading_frame


def _gate_attach(pipe: Any, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The next background load waits for the returned event before loading (a slow disk)."""
    gate = threading.Event()
    real = pipe._attach

    def attach(params: Any) -> Any:
        assert gate.wait(60), "the test never opened the gate"
        return real(params)

    monkeypatch.setattr(pipe, "_attach", attach)
    return gate


@pytest.mark.parametrize("show_reloading_frame", [True, False])
def test_stream_goes_on_while_the_new_model_loads(
    make_pipeline: Any, tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, show_reloading_frame: bool
) -> None:
    other = tmp_path / "another-model"
    shutil.copytree(tiny_sd_dir, other)  # another folder: another worker, a real load
    pipe = make_pipeline(prompt="a cat", show_reloading_frame=show_reloading_frame)
    frame = frames_of(3)
    last = pipe.process(frame)[0]
    old_worker = pipe._worker
    gate = _gate_attach(pipe, monkeypatch)

    new_params = pipe.params.model_copy(update={"model_id": str(other)})
    pipe.update_params(new_params)  # returns at once: the load runs in the background
    pending = pipe.pending_update
    assert pending is not None and not pending.done() and pipe.status()["reloading"]
    during = pipe.process(frame)  # answered while loading
    assert during.shape == (1, 64, 64, 3)
    if show_reloading_frame:
        assert torch.equal(during[0], reloading_frame(last))  # the last output, dimmed, "loading"
        assert float(during.float().mean()) < float(last.float().mean())
    else:
        assert pipe._worker is old_worker and float(during.float().std()) > 5  # the old model restyles

    gate.set()
    pending.result(60)
    pipe.finish_update()
    assert pipe.params.model_id == str(other) and pipe._worker is not old_worker
    status = pipe.status()
    assert status["reloads"] == 1 and not status["reloading"] and status["model_id"] == str(other)
    after = pipe.process(frame)
    assert float(after.float().std()) > 5 and not torch.equal(after[0], reloading_frame(last))


def test_failed_reload_keeps_the_params_and_the_old_model(make_pipeline: Any, tmp_path: Path) -> None:
    pipe = make_pipeline(prompt="a cat")
    good, worker = pipe.params, pipe._worker
    with pytest.raises(ModelLoadError):
        apply_params(pipe, good.model_copy(update={"model_id": str(tmp_path / "missing")}))
    assert pipe.params is good and pipe._worker is worker and pipe.pending_update is None
    assert float(pipe.process(frames_of(4)).float().std()) > 5


def test_close_while_loading_releases_the_new_model(
    make_pipeline: Any, tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "another-model"
    shutil.copytree(tiny_sd_dir, other)
    pipe = make_pipeline(prompt="a cat")
    pool = pipe._pool
    gate = _gate_attach(pipe, monkeypatch)
    pipe.update_params(pipe.params.model_copy(update={"model_id": str(other)}))
    pending = pipe.pending_update
    assert pending is not None
    threading.Timer(0.2, gate.set).start()  # the load finishes after close() gave it up
    pipe.close()
    pending.result(60)
    deadline = time.monotonic() + 30
    while pool.workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.workers() == []  # the model loaded for nobody was released, its worker stopped


def test_background_load_hands_over_once_or_discards() -> None:
    discarded: list[str] = []
    ok = BackgroundLoad("t-ok", lambda: "model", discarded.append)
    ok.finished.result(5)
    assert ok.done and ok.take() == "model"
    with pytest.raises(RuntimeError):
        ok.take()
    failed = BackgroundLoad("t-fail", lambda: (_ for _ in ()).throw(ValueError("no such model")), discarded.append)
    failed.finished.result(5)
    with pytest.raises(ValueError, match="no such model"):
        failed.take()
    ready = BackgroundLoad("t-ready", lambda: "ready", discarded.append)
    ready.finished.result(5)
    assert ready.abandon(timeout=5) and discarded == ["ready"]


def test_reloading_frame_is_dimmed_with_a_line_of_text() -> None:
    last = torch.full((64, 96, 3), 200, dtype=torch.uint8)
    shown = reloading_frame(last)
    assert shown.shape == last.shape and shown.dtype == torch.uint8
    assert int(shown[0, 0, 0]) == 80  # dimmed to 40 %
    assert int((shown[..., 0] > 150).sum()) > 20  # the white "loading" line across the middle
    assert int((shown[:16, ..., 0] > 150).sum()) == 0
