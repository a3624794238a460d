"""Small pieces the benchmarks share: free loopback ports and percentiles.

Not a benchmark (`python -m benchmarks` skips names starting with `_`).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback TCP ports that were free a moment ago (all bound at once)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One loopback TCP port that was free a moment ago."""
    return free_ports(1)[0]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 <= q <= 1) of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def p_ms(seconds: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile (0-100) of durations in seconds, in milliseconds."""
    return percentile(seconds, pct / 100) * 1000
