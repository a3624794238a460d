"""Every place the trickle server relies on aiohttp behaviour that is not public API.

aiohttp (checked against 3.14) offers no public way to do these:

- `HeldHeadersResponse`: a `StreamResponse` whose headers wait for its first body bytes, as a
  `web.Response`'s do, through the private class attribute `_send_headers_immediately`.
- `send_continue()`: an interim `100 Continue` written straight to the request's writer while
  the handler still waits for the body, as aiohttp's own default expect handler does once.
- `interrupt_body()`: ends a handler's wait for body bytes by failing the request's body stream
  (`StreamReader.set_exception`) with `BodyInterrupted`. That is a `TimeoutError` because,
  after the handler has answered, aiohttp drains the unread body ("lingering") and treats a
  TimeoutError there as its end, then closes the connection quietly.

So `check_aiohttp_version()` (run by `TrickleServer.setup()`) refuses an aiohttp outside
`SUPPORTED_AIOHTTP` (the range pyproject.toml pins), and tests/trickle/test_patches.py fails when
one of these behaviours changes.
"""

from __future__ import annotations

import functools
from importlib.metadata import version

from aiohttp import web
from packaging.specifiers import SpecifierSet

from .errors import TrickleError

__all__ = [
    "SUPPORTED_AIOHTTP",
    "BodyInterrupted",
    "HeldHeadersResponse",
    "UnsupportedVersionError",
    "check_aiohttp_version",
    "interrupt_body",
    "send_continue",
]

#: The versions these patches were written for and tested with: the same as pyproject.toml's pin.
SUPPORTED_AIOHTTP = ">=3.14,<3.15"


class UnsupportedVersionError(TrickleError, RuntimeError):
    """The installed aiohttp is outside the range the trickle server's patches support."""


@functools.cache
def check_aiohttp_version() -> None:
    """Raise `UnsupportedVersionError` unless the installed aiohttp is in `SUPPORTED_AIOHTTP`."""
    found = version("aiohttp")
    if not SpecifierSet(SUPPORTED_AIOHTTP).contains(found, prereleases=True):
        raise UnsupportedVersionError(
            f"aiohttp {found} is installed, but {__name__} relies on aiohttp internals and supports "
            f"aiohttp{SUPPORTED_AIOHTTP} only: install a supported version, or check the patches "
            f"against aiohttp {found} and widen the range (with pyproject.toml's pin)."
        )


class HeldHeadersResponse(web.StreamResponse):
    """A streamed response whose headers go out with its first body bytes (or at its end).

    aiohttp flushes a `StreamResponse`'s headers on their own at `prepare()`; holding them puts
    both in one packet, which saves a reader a wake-up on latency-critical first bytes.
    """

    _send_headers_immediately = False


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def send_continue(request: web.BaseRequest) -> None:
    """Send an interim `100 Continue` (HTTP/1.1 only; any number of times before the answer)."""
    if request.version >= (1, 1):
        await request.writer.write(_CONTINUE)


class BodyInterrupted(TimeoutError):
    """Fed into a request's body stream by `interrupt_body()`: the body counts as ended."""


def interrupt_body(request: web.BaseRequest) -> None:
    """Make the handler's pending (or next) read of the request body raise `BodyInterrupted`."""
    request.content.set_exception(BodyInterrupted())
