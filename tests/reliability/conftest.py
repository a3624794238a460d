"""The reliability tests reuse the live and RTMP tests' helper modules (`live_helpers`,
`rtmp_helpers`, and the counting `Snapshot` of `test_no_leaks`)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for _folder in ("live", "rtmp"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.append(str(_TESTS / _folder))
