"""Helpers for the reliability tests (fuzzing, fault injection, soak).

Counting helpers come from `tests/live/test_no_leaks.py` (`Snapshot`): the live and RTMP test
folders are put on `sys.path` by this folder's conftest, so their helper modules import by name.
"""

from __future__ import annotations

import os


def fuzz_examples(default: int) -> int:
    """Examples per fuzz test: `default` in CI, `LIVESTREAM_FUZZ_EXAMPLES` for a longer run."""
    value = os.environ.get("LIVESTREAM_FUZZ_EXAMPLES", "")
    return int(value) if value.isdigit() and int(value) > 0 else default
