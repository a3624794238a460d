"""The reliability tests reuse the live and RTMP tests' helper modules (`live_helpers`,
`rtmp_helpers`, the counting `Snapshot` of `test_no_leaks`) and their fixtures (the
orchestrator's trickle server, the engine factories, generated MPEG-TS segments)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_TESTS = Path(__file__).resolve().parent.parent
for _folder in ("live", "rtmp"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.append(str(_TESTS / _folder))


def _load(folder: str) -> ModuleType:
    """A sibling folder's conftest under a name of its own (conftest basenames collide)."""
    spec = importlib.util.spec_from_file_location(f"reliability_{folder}_fixtures", _TESTS / folder / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_live = _load("live")
_rtmp = _load("rtmp")
orchestrator = _live.orchestrator
engine_factory = _live.engine_factory
http = _live.http
ts_segments = _live.ts_segments
numbered_source = _rtmp.numbered_source
rtmp_engine_factory = _rtmp.rtmp_engine_factory
