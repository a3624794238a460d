"""Trickle errors.

    TrickleError
     ├── TrickleConfigError (ValueError)          a server limit or client option is invalid
     ├── TrickleChannelError                      in-process channel management failed
     │    └── TrickleChannelLimitError            the server already holds its maximum of channels
     ├── TrickleRequestError                      raised by a create/delete hook: answer with its status
     └── TrickleClientError                       publisher or subscriber failure
          ├── TrickleStreamGoneError              the channel no longer accepts this client
          │    ├── TrickleStreamNotFoundError     404: the channel does not exist (any more)
          │    └── TrickleStreamClosedError       the server answered Lp-Trickle-Closed
          ├── TrickleHTTPError                    an unexpected HTTP status
          ├── TrickleReadError                    a segment body broke off mid-read
          ├── TricklePublishError                 a segment could not be published
          │    └── TrickleWriteTimeoutError (TimeoutError)  the server did not take bytes in time
          └── TrickleRetriesExhaustedError        transient failures outlasted the retry budget
"""

from __future__ import annotations

__all__ = [
    "TrickleChannelError",
    "TrickleChannelLimitError",
    "TrickleClientError",
    "TrickleConfigError",
    "TrickleError",
    "TrickleHTTPError",
    "TrickleReadError",
    "TricklePublishError",
    "TrickleRequestError",
    "TrickleRetriesExhaustedError",
    "TrickleStreamClosedError",
    "TrickleStreamGoneError",
    "TrickleStreamNotFoundError",
    "TrickleWriteTimeoutError",
]


class TrickleError(Exception):
    """Base class of every trickle error."""


class TrickleConfigError(TrickleError, ValueError):
    """A server limit or client option is invalid."""


class TrickleChannelError(TrickleError):
    """In-process channel management failed."""


class TrickleChannelLimitError(TrickleChannelError):
    """The server already holds `max_streams` channels."""


class TrickleRequestError(TrickleError):
    """Raised by a `before_create`/`before_delete` hook to refuse a request.

    The server answers with `status` when it is a 4xx code, else 400 (as go-livepeer's RequestError).
    """

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"request refused with status {status}")
        self.status = status
        self.message = message


class TrickleClientError(TrickleError):
    """A publisher or subscriber failed."""


class TrickleStreamGoneError(TrickleClientError):
    """The channel no longer exists or is closed; retrying will not help."""


class TrickleStreamNotFoundError(TrickleStreamGoneError):
    """The server answered 404: no such channel."""


class TrickleStreamClosedError(TrickleStreamGoneError):
    """The server answered with `Lp-Trickle-Closed`: the channel was closed."""


class TrickleHTTPError(TrickleClientError):
    """The server answered with an unexpected status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TrickleReadError(TrickleClientError):
    """The connection broke while a segment body was being read."""


class TricklePublishError(TrickleClientError):
    """A segment could not be published (connection failure, or a non-200 answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The server's HTTP status when it answered; None when the request failed unanswered.
        self.status = status


class TrickleWriteTimeoutError(TricklePublishError, TimeoutError):
    """A segment write waited too long for the server to take the bytes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class TrickleRetriesExhaustedError(TrickleClientError):
    """Transient failures continued past the client's retry budget."""
