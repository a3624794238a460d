"""`pipelines.progress`: what a person sees of long work, on a terminal and in logs, and the
snapshot a live session's status carries."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from pathlib import Path

import pytest

from pipelines.progress import Progress
from pipelines.registry import PipelineRegistry


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_every_interval_and_a_final_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress("prepare sd-turbo", interval=5.0, clock=clock)
    caplog.set_level(logging.INFO, logger="pipelines.progress")
    stage = progress.stage("download sd-turbo", total=4_000_000_000, unit="B")
    clock.now += 1
    stage.set(1_000_000_000)  # within the interval: no line
    assert progress.snapshot() == {"stage": "download sd-turbo", "progress": 0.25, "elapsed_s": 1.0}
    clock.now += 5
    stage.set(2_000_000_000)
    clock.now += 4
    stage.advance(1_000_000_000)
    progress._finish(stage)
    # (only this progress's lines: a load an earlier test left running may log its own meanwhile)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prepare sd-turbo:")]
    assert lines == [
        "prepare sd-turbo: download sd-turbo: 50% (2.0 GB of 4.0 GB), 6 s",
        "prepare sd-turbo: download sd-turbo done in 10.0 s",
    ]


def test_a_quick_stage_logs_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipelines.progress")
    progress = Progress("live cam: noop", interval=5.0)
    with progress.stage("load"):
        pass
    # (a batch load an earlier test left running may log its own lines meanwhile)
    assert [r for r in caplog.records if "live cam" in r.getMessage()] == []
    snapshot = progress.snapshot()
    assert snapshot is not None and snapshot["stage"] == "load"


def test_a_stage_without_updates_still_reports_while_it_runs(caplog: pytest.LogCaptureFixture) -> None:
    """A TensorRT build or a from_pretrained reports nothing itself: the heartbeat logs it."""
    caplog.set_level(logging.INFO, logger="pipelines.progress")
    progress = Progress("prepare streamdiffusion", interval=0.05)
    seen = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "build engines:" in record.getMessage():
                seen.set()

    watch = Watch()
    logging.getLogger("pipelines.progress").addHandler(watch)
    try:
        with progress.stage("build engines") as stage:
            assert seen.wait(10), "no heartbeat line"
            snapshot = progress.snapshot()
            assert snapshot is not None and (snapshot["stage"], snapshot["progress"]) == ("build engines", None)
    finally:
        logging.getLogger("pipelines.progress").removeHandler(watch)
    assert stage._heartbeat is not None and not stage._heartbeat.is_alive()
    assert "build engines done in" in caplog.records[-1].getMessage()
    snapshot = progress.snapshot()
    assert snapshot is not None and snapshot["progress"] == 1.0


def test_a_bar_on_a_terminal() -> None:
    out = Terminal()
    progress = Progress("prepare", out=out)
    with progress.stage("warm-up", total=4) as stage:
        for _ in range(4):
            stage.advance()
    text = out.getvalue()
    assert text.startswith("\rprepare: [------------------------] warm-up: 0%")
    assert "\rprepare: [########################] warm-up: 100%" in text and text.endswith("\n")


def test_huggingface_hub_byte_bar_feeds_a_stage() -> None:
    """The tqdm class given to `snapshot_download(tqdm_class=...)`: huggingface_hub 2.x makes an
    aggregate byte bar from it with total 0, raises the total per file, updates per chunk."""
    progress = Progress("prepare")
    cls = progress.tqdm("download stabilityai/sd-turbo")
    files = cls(total=3, desc="Fetching 3 files")  # the file-count bar: not followed
    files.update(1)
    assert progress.snapshot() is None
    bar = cls(desc="Reconstructing (incomplete total...)", total=0, initial=0, unit="B", unit_scale=True)
    bar.total = 1000
    bar.update(250)
    bar.total = 2000  # a second file starts
    bar.update(250)
    snapshot = progress.snapshot()
    assert snapshot is not None and (snapshot["stage"], snapshot["progress"]) == ("download stabilityai/sd-turbo", 0.25)
    bar.update(1500)
    bar.close()
    files.close()
    snapshot = progress.snapshot()
    assert snapshot is not None and snapshot["progress"] == 1.0


async def test_a_model_load_logs_while_it_runs(caplog: pytest.LogCaptureFixture) -> None:
    """A batch model load (a download, on a server without a terminal) is not silent."""
    caplog.set_level(logging.INFO, logger="pipelines.progress")
    gate, logged = threading.Event(), threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("text-to-image some/model: load: "):
                logged.set()

    def slow_factory(model_id: str, model_dir: Path | None) -> str:
        assert gate.wait(20), "the test never released the load"
        return f"pipeline of {model_id}"

    watch = Watch()
    logging.getLogger("pipelines.progress").addHandler(watch)
    registry = PipelineRegistry(
        model_dir=None, default_models={}, pinned=None, max_queue=1,
        factories={"text-to-image": slow_factory}, progress_interval=0.05,
    )  # fmt: skip
    try:
        job = asyncio.create_task(registry.run("text-to-image", "some/model", lambda pipeline: str(pipeline)))
        assert await asyncio.to_thread(logged.wait, 20)
        gate.set()
        assert await job == "pipeline of some/model"
    finally:
        gate.set()
        logging.getLogger("pipelines.progress").removeHandler(watch)
        await registry.aclose()
    assert any("load done in" in r.getMessage() for r in caplog.records)


def test_close_stops_a_stage_left_running() -> None:
    """A load abandoned past its bound: closing the progress ends its heartbeat thread."""
    progress = Progress("live cam: slow", interval=0.05)
    stage = progress.stage("load").__enter__()
    assert stage._heartbeat is not None and stage._heartbeat.is_alive()
    progress.close()
    assert not stage._heartbeat.is_alive()
    progress.close()
