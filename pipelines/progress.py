"""Progress of long work (model downloads, engine builds, compiles, warm-ups), shown to people.

    progress = Progress("prepare streamdiffusion")             # a bar on a TTY, else log lines
    with progress.stage("warm-up", total=4) as stage:
        for _ in range(4):
            ...
            stage.advance()
    snapshot_download(repo, tqdm_class=progress.tqdm("download sd-turbo"))   # bytes, via huggingface_hub
    progress.snapshot()   # {"stage": "warm-up", "progress": 0.5, "elapsed_s": 1.2}: for a status field

One `Progress` belongs to one piece of work (a `livestream prepare` run, a live session's
pipeline load); its stages run one after another, reported from any thread (a lock). On a
terminal (`out` is a TTY) the current stage is one line redrawn in place at most ten times a
second; otherwise (logs, a container) it is a log line every `interval` seconds while a stage
runs and one when it ends (stages quicker than `interval` log at DEBUG only), so a long step
never looks hung. A stage without a total (a `from_pretrained`, a TensorRT build) reports its
elapsed time instead of a fraction. A stage used as a context manager has a heartbeat thread
(ended with the stage) that redraws or logs it even when nothing reports in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from tqdm.std import tqdm

__all__ = ["Progress", "Stage"]

log = logging.getLogger(__name__)

_REDRAW_S = 0.1
_BAR_WIDTH = 24


def _amount(value: float, unit: str) -> str:
    if unit == "B":
        for suffix in ("B", "kB", "MB", "GB"):
            if abs(value) < 1000 or suffix == "GB":
                return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
            value /= 1000
    return f"{value:g}{(' ' + unit) if unit else ''}"


class Stage:
    """One step of a `Progress`: `advance(n)` / `set(done, total)` from any thread."""

    def __init__(self, progress: Progress, name: str, total: float | None, unit: str) -> None:
        self.progress = progress
        self.name = name
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.started = progress._clock()
        self.finished = False
        self.logged = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return 1.0 if self.finished else None
        return max(0.0, min(1.0, self.done / self.total))

    def advance(self, n: float = 1) -> None:
        self.progress._update(self, self.done + n, self.total)

    def set(self, done: float, total: float | None = None) -> None:
        self.progress._update(self, done, total if total is not None else self.total)

    def __enter__(self) -> Stage:
        period = _REDRAW_S * 10 if self.progress.tty else self.progress.interval
        self._heartbeat = threading.Thread(target=self._beat, args=(period,), name="progress-heartbeat", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress._finish(self, failed=exc is not None)

    def _beat(self, period: float) -> None:
        while not self._stop.wait(period):
            self.progress._tick(self)

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        thread = self._heartbeat
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)


class Progress:
    """Stages of one piece of work (see the module docstring)."""

    def __init__(
        self,
        label: str,
        *,
        out: TextIO | None = None,
        interval: float = 5.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        #: Where a bar is drawn; None: log lines only.
        self.out = out
        self.interval = interval
        self._log = logger or log
        self._clock = clock
        self._lock = threading.Lock()
        self._stage: Stage | None = None
        self._last_draw = 0.0
        self._last_log = 0.0
        self.started = clock()

    @property
    def tty(self) -> bool:
        out = self.out
        try:
            return out is not None and out.isatty()
        except (ValueError, OSError):  # a closed or odd stream: no bar
            return False

    @property
    def current(self) -> Stage | None:
        return self._stage

    def stage(self, name: str, total: float | None = None, unit: str = "") -> Stage:
        """Start the next stage (the previous one, if still open, is finished)."""
        stage = Stage(self, name, total, unit)
        with self._lock:
            previous, self._stage = self._stage, stage
            self._last_log = self._clock()
        if previous is not None and not previous.finished:
            self._finish(previous)
        if not self.tty:
            self._log.debug("%s: %s%s", self.label, name, f" ({_amount(total, unit)})" if total else "")
        else:
            self._draw(stage, force=True)
        return stage

    def close(self) -> None:
        """The work is over or abandoned (a load stuck past its bound): its current stage's
        heartbeat stops, without a final line. Idempotent."""
        stage = self._stage
        if stage is not None:
            with self._lock:
                stage.finished = True
            stage._stop_heartbeat()

    def snapshot(self) -> dict[str, Any] | None:
        """The current stage for a status field: `{"stage", "progress" (0..1 or None), "elapsed_s"}`."""
        stage = self._stage
        if stage is None:
            return None
        fraction = stage.fraction
        return {
            "stage": stage.name,
            "progress": round(fraction, 3) if fraction is not None else None,
            "elapsed_s": round(self._clock() - stage.started, 1),
        }

    def tqdm(self, name: str) -> type[Any]:
        """A tqdm class for huggingface_hub's `snapshot_download(tqdm_class=...)`: its byte
        count (all files together) becomes stage `name` of this progress. The bar itself is
        drawn by this `Progress`, not by tqdm."""
        progress = self

        class _Bytes(tqdm):  # type: ignore[misc]  # tqdm has no types (mypy config): Any
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                # huggingface_hub's aggregate byte bar ("Reconstructing ...", every file's
                # bytes as written) is followed; its other bars (file count, transfer) are not.
                self._followed = str(kwargs.get("desc") or "").startswith("Reconstructing")
                self._stage = progress.stage(name, unit="B") if self._followed else None
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)
                self._count = float(kwargs.get("initial") or 0)

            def update(self, n: float | None = 1) -> bool | None:
                self._count += float(n or 0)
                if self._stage is not None:
                    self._stage.set(self._count, float(self.total) if self.total else None)
                super().update(n)
                return None

            def close(self) -> None:
                if self._stage is not None and not self._stage.finished:
                    progress._finish(self._stage)
                super().close()

        return _Bytes

    # --- from the stages (any thread) -------------------------------------------------------

    def _update(self, stage: Stage, done: float, total: float | None) -> None:
        with self._lock:
            stage.done, stage.total = done, total
            now = self._clock()
            due = not self.tty and now - self._last_log >= self.interval
            if due:
                self._last_log = now
        if self.tty:
            self._draw(stage)
        elif due:
            stage.logged = True
            self._log.info("%s: %s", self.label, self._line(stage))

    def _tick(self, stage: Stage) -> None:
        """The heartbeat: a redraw, or a log line when none was written for `interval`."""
        if stage.finished:
            return
        if self.tty:
            self._draw(stage, force=True)
            return
        with self._lock:
            now = self._clock()
            due = now - self._last_log >= self.interval * 0.9
            if due:
                self._last_log = now
        if due:
            stage.logged = True
            self._log.info("%s: %s", self.label, self._line(stage))

    def _finish(self, stage: Stage, *, failed: bool = False) -> None:
        with self._lock:
            if stage.finished:
                return
            stage.finished = True
        stage._stop_heartbeat()
        took = self._clock() - stage.started
        if self.tty:
            self._draw(stage, force=True)
            assert self.out is not None
            self.out.write("\n")
            self.out.flush()
            return
        level = logging.INFO if stage.logged or took >= self.interval or failed else logging.DEBUG
        outcome = "failed after" if failed else "done in"
        self._log.log(level, "%s: %s %s %.1f s", self.label, stage.name, outcome, took)

    def _line(self, stage: Stage) -> str:
        elapsed = self._clock() - stage.started
        fraction = stage.fraction
        if fraction is None:
            amount = f", {_amount(stage.done, stage.unit)}" if stage.done else ""
            return f"{stage.name}: {elapsed:.0f} s{amount}"
        total = f" ({_amount(stage.done, stage.unit)} of {_amount(stage.total or 0, stage.unit)})" if stage.total else ""
        return f"{stage.name}: {fraction * 100:.0f}%{total}, {elapsed:.0f} s"

    def _draw(self, stage: Stage, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_draw < _REDRAW_S:
            return
        self._last_draw = now
        fraction = stage.fraction
        filled = round((fraction or 0.0) * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled) if fraction is not None else "~" * _BAR_WIDTH
        out = self.out
        assert out is not None
        out.write(f"\r{self.label}: [{bar}] {self._line(stage)}\x1b[K")
        out.flush()
