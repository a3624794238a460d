"""Every wait in `livestream/` and `pipelines/` is bounded (issue 17): an AST scan.

It flags, in every module of those packages, a call that can block or suspend forever when
nothing bounds it:

- `.result()`, `.join()`, `.wait()`, `.acquire()` and `.get()` with no argument at all (a
  timeout, `blocking=False` or any argument counts as chosen: `",".join(x)` and `d.get(k)`
  are not waits); a method of `self` (`await self.get()`) is not a primitive: the waits
  inside it are scanned where they are written;
- `asyncio.wait(...)` without `timeout=`, `asyncio.wait_for(x)` / `wait_for(x, None)`.

A call is bounded when it is the awaited argument of `asyncio.wait_for(x, t)` or inside an
`async with asyncio.timeout(t)` block (`t` not `None`). What remains must be in `ALLOWED`,
each entry saying why that wait is bounded anyway (e.g. the future is already done, or the
task awaiting is cancelled by its owner). An entry no call matches fails the test too, so
the list stays exact.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("livestream", "pipelines")
#: Methods that wait when called with no argument.
WAIT_METHODS = ("result", "join", "wait", "acquire", "get")

# Why the waits below are bounded though no timeout is written at the call.
_DONE = "the future is done: it was waited on just before"
_CANCELLED = "awaited only after cancel(): the task ends at its next await"
_IDLE_TASK = "idle wait for the next item, in a task its owner ends (end()/close() sets the event, or cancels the task)"
_IDLE_THREAD = "idle wait for work on the object's own thread: close/end/stop sets the flag and notifies under the same lock"
_CALLER_BOUNDS = "every caller bounds it (asyncio.timeout / wait_for around the call)"

#: (module path, enclosing function, call) -> why that wait is bounded.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("livestream/api/routes.py", "_until_disconnected", "task.result"): _DONE,
    ("livestream/api/routes.py", "_until_disconnected", "asyncio.wait"): _CANCELLED,
    ("livestream/egress/__init__.py", "QueuedSink.get", "self._ready.wait"): _IDLE_TASK + "; the sink's aclose(timeout) cancels consume()",
    ("livestream/egress/trickle.py", "TrickleSink._take", "self._ready.wait"): _IDLE_TASK + "; the sink's aclose(timeout) cancels consume()",
    ("livestream/egress/trickle.py", "TrickleSink._take", "self._ready.wait"): _IDLE_TASK + "; the sink's aclose(timeout) cancels consume()",
    ("livestream/gateway/live.py", "RemoteWriter._run", "self._ops.get"): _IDLE_TASK + " (aclose queues 'close', then cancels after its bound)",
    ("livestream/gateway/live_media.py", "WhipEncoder._run", "self._cond.wait"): _IDLE_THREAD + " (end)",
    ("livestream/ingest/trickle.py", "TrickleIngest.run", "asyncio.wait"): (
        "the reader lasts as long as the input: every segment read runs under asyncio.timeout(idle timeout); stop/abort cancel it"
    ),
    ("livestream/live/encode_stage.py", "EncodeStage._main", "self._cond.wait"): _IDLE_THREAD,
    ("livestream/live/events_channel.py", "EventsChannel._publish", "self._ready.wait"): _IDLE_TASK,
    ("livestream/live/frames.py", "FrameQueue.get_batch", "self._ready.wait"): _IDLE_TASK + "; close() ends it with StreamEnded",
    ("livestream/live/params.py", "SessionParams.apply_loop", "self._ready.wait"): _IDLE_TASK + "; the session cancels it when its media ends",
    ("livestream/live/pipeline_stage.py", "_StageThread._main", "self._jobs.get"): _IDLE_THREAD + " (stop() puts None)",
    ("livestream/live/session.py", "Session.wait_finished", "self._finished.wait"): (
        "as long as the stream, by contract (the docstring): the liverunner's watch task is cancelled when the runner closes"
    ),
    ("livestream/live/session.py", "Session._run_media", "asyncio.wait"): (
        "the media tasks end when the input does; the watchdog turns a stop into an abort after stop_timeout"
    ),
    ("livestream/live/session.py", "Session._watchdog", "self._stop_requested.wait"): "cancelled by _run_media once the media tasks end",
    ("livestream/media/ts_input.py", "SegmentPipe.wait_room", "self._room.wait"): _CALLER_BOUNDS,
    ("livestream/media/ts_input.py", "SegmentPipe.read", "self._cond.wait"): _IDLE_THREAD,
    ("livestream/media/ts_input.py", "SegmentPipe.begin_segment", "self._cond.wait"): _IDLE_THREAD,
    ("livestream/media/ts_input.py", "SegmentPipe.finish_segment", "self._cond.wait"): _IDLE_THREAD,
    ("livestream/rtmp/ingest.py", "RtmpIngest.wait_room", "self._room.wait"): _CALLER_BOUNDS,
    ("livestream/rtmp/ingest.py", "RtmpIngest._take", "self._cond.wait"): _IDLE_THREAD,
    ("livestream/rtmp/push.py", "RtmpPushSink._publish_once", "asyncio.wait"): _CANCELLED,
    ("livestream/rtmp/push.py", "RtmpPushSink._send", "asyncio.wait"): (
        "the next packet or the server dropping us (idle: end() ends get(), aclose(timeout) cancels); then a cancelled get"
    ),
    ("livestream/rtmp/push.py", "RtmpPushSink._send", "get.result"): _DONE,
    ("livestream/webrtc/tracks.py", "_QueuedTrack._next", "self._ready.wait"): _IDLE_TASK + " (the fanout's _end)",
    ("pipelines/live/diffusion_worker.py", "DiffusionWorker._loop", "self._cond.wait"): _IDLE_THREAD,
    ("pipelines/llm/transformers_backend.py", "TransformersBackend.stream", "events.get"): (
        "the generation thread emits one event per step, at most max_tokens steps, and always a last one"
    ),
    ("pipelines/registry.py", "PipelineRegistry.wait_preloaded", "asyncio.wait"): (
        "as long as the pinned load (no load timeout, as ai-runner: go-livepeer replaces a runner LOADING too long); aclose cancels it"
    ),
    ("pipelines/registry.py", "PipelineRegistry.run", "slot.lock.acquire"): (
        "behind at most max_queue jobs (admission); the waiter is cancelled when its client leaves (_until_disconnected)"
    ),
    ("pipelines/registry.py", "PipelineRegistry._loaded", "asyncio.wait"): "as wait_preloaded: as long as the shared load; aclose cancels it",
    ("pipelines/registry.py", "PipelineRegistry._loaded", "load.result"): _DONE,
}


@dataclass(frozen=True)
class Wait:
    path: str
    function: str
    call: str
    line: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.function, self.call)


def _is_none(node: ast.expr | None) -> bool:
    return node is None or (isinstance(node, ast.Constant) and node.value is None)


def _name(node: ast.expr) -> str:
    return ast.unparse(node)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _timeout_arg(call: ast.Call, position: int) -> ast.expr | None:
    found = _keyword(call, "timeout")
    if found is None and len(call.args) > position:
        found = call.args[position]
    return found


class _Scan(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.stack: list[str] = []
        self.bounded = 0
        self.found: list[Wait] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append(node.name)
        saved, self.bounded = self.bounded, 0  # a nested function runs later, outside the bound
        self.generic_visit(node)
        self.bounded = saved
        self.stack.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    def visit_Lambda(self, node: ast.Lambda) -> None:
        saved, self.bounded = self.bounded, 0
        self.generic_visit(node)
        self.bounded = saved

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        timed = any(
            isinstance(item.context_expr, ast.Call)
            and _name(item.context_expr.func) in ("asyncio.timeout", "asyncio.timeout_at", "timeout", "timeout_at")
            and not _is_none(item.context_expr.args[0] if item.context_expr.args else _keyword(item.context_expr, "delay"))
            for item in node.items
        )
        for item in node.items:
            self.visit(item)
        self.bounded += timed
        for stmt in node.body:
            self.visit(stmt)
        self.bounded -= timed

    def visit_Call(self, node: ast.Call) -> None:
        func = _name(node.func)
        if func in ("asyncio.wait_for", "wait_for"):
            timeout = _timeout_arg(node, 1)
            if _is_none(timeout):
                self._flag(node, func)
                self.generic_visit(node)
                return
            # The awaited argument is bounded by this timeout; the timeout expression is not waited on.
            self.bounded += 1
            self.generic_visit(node)
            self.bounded -= 1
            return
        if func in ("asyncio.wait",) and _is_none(_keyword(node, "timeout")):
            self._flag(node, func)
        elif (
            isinstance(node.func, ast.Attribute)
            and node.func.attr in WAIT_METHODS
            and not node.args
            and not node.keywords
            and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "self")
        ):
            self._flag(node, func)
        self.generic_visit(node)

    def _flag(self, node: ast.Call, func: str) -> None:
        if self.bounded:
            return
        self.found.append(Wait(self.path, ".".join(self.stack) or "<module>", func, node.lineno))


def scan() -> list[Wait]:
    found: list[Wait] = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            visitor = _Scan(path)
            visitor.visit(ast.parse(file.read_text(), filename=path))
            found.extend(visitor.found)
    return found


def test_scan_flags_unbounded_waits_and_skips_bounded_ones() -> None:
    source = """
import asyncio
async def f(q, lock, fut, t, ev, tasks):
    await q.get()
    lock.acquire()
    fut.result()
    t.join()
    await asyncio.wait(tasks)
    await asyncio.wait_for(ev.wait(), None)
    await asyncio.wait_for(ev.wait(), 5)
    async with asyncio.timeout(1):
        await q.get()
    fut.result(timeout=3)
    t.join(2)
    lock.acquire(blocking=False)
    ",".join(["a"])
    {}.get("k")
    await asyncio.wait(tasks, timeout=1)
"""
    visitor = _Scan("x.py")
    visitor.visit(ast.parse(source))
    assert [(w.call, w.line) for w in visitor.found] == [
        ("q.get", 4),
        ("lock.acquire", 5),
        ("fut.result", 6),
        ("t.join", 7),
        ("asyncio.wait", 8),
        ("asyncio.wait_for", 9),
        ("ev.wait", 9),
    ]


def test_every_wait_in_livestream_and_pipelines_is_bounded() -> None:
    found = scan()
    unbounded = [f"{w.path}:{w.line} {w.function}: {w.call}()" for w in found if w.key not in ALLOWED]
    assert not unbounded, "waits with no bound (add a timeout, or an ALLOWED entry saying why it is bounded):\n" + "\n".join(
        unbounded
    )
    stale = sorted(set(ALLOWED) - {w.key for w in found})
    assert not stale, f"ALLOWED entries no call matches any more: {stale}"
