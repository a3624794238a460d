"""Small bounded meters for live figures: frame rates and latency percentiles."""

from __future__ import annotations

import time
from collections import deque

__all__ = ["LatencyMeter", "RateMeter", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


class RateMeter:
    """Events per second over the last `window` seconds (bounded memory)."""

    def __init__(self, window: float = 2.0, max_events: int = 1024) -> None:
        self.window = window
        self._times: deque[float] = deque(maxlen=max_events)
        self.count = 0
        self.last: float | None = None

    def tick(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for _ in range(n):
            self._times.append(now)
        self.count += n
        self.last = now

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        cutoff = now - self.window
        recent = [t for t in list(self._times) if t >= cutoff]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return round(len(recent) / max(span, self.window / 2), 2)


class LatencyMeter:
    """The last `size` samples (seconds); percentiles reported in milliseconds."""

    def __init__(self, size: int = 600) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def summary(self) -> dict[str, float | None]:
        values = list(self._samples)
        p50 = percentile(values, 50)
        p99 = percentile(values, 99)
        return {
            "p50": None if p50 is None else round(p50 * 1000, 2),
            "p99": None if p99 is None else round(p99 * 1000, 2),
        }

    def values(self) -> list[float]:
        return list(self._samples)
