"""Protocol constants and pure helpers shared by the server and the clients (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CLOSED_VALUE",
    "CURRENT_SEQ",
    "HEADER_CLOSED",
    "HEADER_EXPECT_CONTENT",
    "HEADER_LATEST",
    "HEADER_RESET",
    "HEADER_SEQ",
    "NEXT_SEQ",
    "STATUS_SEQ_NOT_FOUND",
    "header_int",
    "is_closed",
    "parse_seq",
]

HEADER_SEQ = "Lp-Trickle-Seq"
HEADER_LATEST = "Lp-Trickle-Latest"
HEADER_CLOSED = "Lp-Trickle-Closed"
HEADER_RESET = "Lp-Trickle-Reset"
HEADER_EXPECT_CONTENT = "Expect-Content"
CLOSED_VALUE = "terminated"

#: "The channel exists but this seq does not" (evicted, or too far ahead).
STATUS_SEQ_NOT_FOUND = 470

#: `-1` in a URL: the server's next write seq.
NEXT_SEQ = -1
#: `-2` in a GET URL: the segment being written now (the newest one).
CURRENT_SEQ = -2


def parse_seq(text: str, *, lowest: int) -> int | None:
    """Parse a seq path segment as Go's `strconv.Atoi` does; None when invalid or below `lowest`.

    GET accepts -2 and -1, POST and DELETE only -1: Go would panic on `-3 % 5`, we answer 400.
    """
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    value = int(text)
    return value if value >= lowest else None


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    """An integer header, or None when absent or malformed (older servers omit some headers)."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def is_closed(headers: Mapping[str, str]) -> bool:
    """`Lp-Trickle-Closed` with any non-empty value means the channel is closed."""
    return bool(headers.get(HEADER_CLOSED, ""))
