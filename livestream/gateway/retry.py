"""The retry policy: what a failed try means, and whether another try may start.

go-livepeer's rules (`processAIRequest`), by what the runner answered:

| answer | kind | next |
|---|---|---|
| text contains "ticketparams expired" | `SAME_AGAIN` | the same runner again, up to `same_backend_tries` |
| "insufficient capacity", "invalid ticket sendernonce", 503 (busy / not available), 429, 404, 405 | `NEXT` | the next runner, no suspension |
| any other 4xx | `CLIENT` | the runner's answer goes to the client, no retry |
| 5xx, connection error, timeout, an answer that breaks the schema | `FAILURE` | suspend the runner, try the next |

The time budget (`retry_timeout`, default 2 s) is checked only before a new try starts, so it
never cuts a running inference; `max_tries` bounds the tries (go-livepeer: 20).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

__all__ = ["ErrorKind", "RetryBudget", "TryError", "classify"]


class ErrorKind(enum.Enum):
    SAME_AGAIN = "same_again"
    NEXT = "next"
    CLIENT = "client"
    FAILURE = "failure"


class TryError(Exception):
    """One try failed. `status`/`body`/`content_type`: the runner's answer, when there was one."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None, body: bytes = b"",
                 content_type: str = "application/json") -> None:  # fmt: skip
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.body = body
        self.content_type = content_type


_NEXT_STATUSES = frozenset({404, 405, 429, 503})


def classify(status: int, text: str) -> ErrorKind:
    """The kind of a runner's non-200 answer."""
    lowered = text.lower()
    if "ticketparams expired" in lowered:
        return ErrorKind.SAME_AGAIN
    if "insufficient capacity" in lowered or "invalid ticket sendernonce" in lowered or status in _NEXT_STATUSES:
        return ErrorKind.NEXT
    if 400 <= status < 500:
        return ErrorKind.CLIENT
    return ErrorKind.FAILURE


@dataclass
class RetryBudget:
    """When the request arrived and how many tries it has had."""

    timeout: float
    max_tries: int
    started: float = field(default_factory=time.monotonic)
    tries: int = 0

    def may_try(self) -> bool:
        """Whether a new try may start: always the first, then while time and tries are left."""
        if self.tries == 0:
            return True
        return self.tries < self.max_tries and time.monotonic() - self.started < self.timeout
