"""Helpers for the reliability tests (fuzzing, fault injection, soak).

Counting helpers come from `tests/live/test_no_leaks.py` (`Snapshot`): the live and RTMP test
folders are put on `sys.path` by this folder's conftest, so their helper modules import by name.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from livestream.rtmp import amf0
from livestream.rtmp.chunks import MAX_MESSAGE_SIZE


def fuzz_examples(default: int) -> int:
    """Examples per fuzz test: `default` in CI, `LIVESTREAM_FUZZ_EXAMPLES` for a longer run."""
    value = os.environ.get("LIVESTREAM_FUZZ_EXAMPLES", "")
    return int(value) if value.isdigit() and int(value) > 0 else default


# --- generators shared by the RTMP fuzz tests -----------------------------------------------


@st.composite
def chunk(draw: st.DrawFn) -> bytes:
    """One RTMP chunk with a plausible header: any fmt, small and large chunk stream ids,
    extended timestamps, lengths near the limits, payloads shorter or longer than announced."""
    fmt = draw(st.integers(0, 3))
    csid = draw(st.sampled_from([2, 3, 4, 5, 6, 63, 64, 319, 320, 65599]))
    if csid < 64:
        basic = bytes([fmt << 6 | csid])
    elif csid < 320:
        basic = bytes([fmt << 6, csid - 64])
    else:
        basic = bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])
    ts = draw(st.sampled_from([0, 1, 33, 0xFFFFFE, 0xFFFFFF]))
    length = draw(st.sampled_from([0, 1, 4, 127, 128, 129, 4096, MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE + 1, 0xFFFFFF]))
    type_id = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22, 0, 255]))
    header = b""
    if fmt < 3:
        header += ts.to_bytes(3, "big")
    if fmt < 2:
        header += length.to_bytes(3, "big") + bytes([type_id])
    if fmt == 0:
        header += draw(st.sampled_from([0, 1, 0xFFFFFFFF])).to_bytes(4, "little")
    if ts == 0xFFFFFF or draw(st.booleans()):
        header += draw(st.integers(0, 0xFFFFFFFF)).to_bytes(4, "big")
    if type_id == 1 and draw(st.booleans()):
        body = draw(st.sampled_from([0, 1, 128, 4096, 1 << 24, (1 << 24) + 1, 0x7FFFFFFF])).to_bytes(4, "big")
    elif type_id in (18, 20) and draw(st.booleans()):
        body = amf0.encode_all(*draw(st.lists(amf_values(), max_size=4)))
    else:
        body = draw(st.binary(max_size=300))
    return basic + header + body


amf_leaf = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=20), st.integers(-(2**40), 2**40)
)


def amf_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        amf_leaf,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4)),
        max_leaves=12,
    )


def load_module(name: str, path: str) -> ModuleType:
    """A test helper module of another folder, by path, under a name of its own."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
