"""Requests per minute per API key (`--limit api_rate=N`; off by default).

A token bucket per key: the bearer token when the request has one (kept only as a SHA-256
digest, never logged), else the remote address. A bucket holds `rate` requests and refills at
`rate` per minute; a request that finds it empty gets 429 with `Retry-After`. At most
`max_keys` buckets are kept (the least recently used go first), so a flood of new keys costs
bounded memory. Health and metrics probes are not counted.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from .errors import json_error

__all__ = ["RateLimiter", "rate_limit_middleware"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UNCOUNTED = frozenset({"/health", "/healthz", "/metrics", "/hardware/info", "/hardware/stats"})


class RateLimiter:
    """Token buckets keyed by an opaque string (see the module docstring)."""

    def __init__(self, per_minute: int, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 when the request may go on, else the seconds until one more is allowed."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60.0)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) * 60.0 / self.per_minute
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def request_key(request: web.Request) -> str:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()
    return f"addr:{request.remote or ''}"


def rate_limit_middleware(limiter: RateLimiter) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path in _UNCOUNTED or request.method == "OPTIONS":
            return await handler(request)
        wait = limiter.take(request_key(request))
        if wait > 0:
            return json_error(
                429,
                f"Too many requests: this API key may make {limiter.per_minute} per minute (--limit api_rate=N). "
                f"Retry in {math.ceil(wait)} s.",
                {hdrs.RETRY_AFTER: str(math.ceil(wait))},
            )
        return await handler(request)

    return middleware
