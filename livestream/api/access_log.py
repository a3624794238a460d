"""The access log without secrets: method, path, status, bytes, seconds; never the query string.

aiohttp's default format logs the request line (`%r`), query included, so a WHIP publish with
`?token=KEY` or a trickle URL carrying a key would put the secret in every log. This logger
writes the path alone (a stream *name* is public; keys travel in headers or the query).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = ["RedactedAccessLogger"]


class RedactedAccessLogger(AbstractAccessLogger):
    """`web.run_app(..., access_log_class=RedactedAccessLogger)`."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(20):  # INFO
            return
        query = " ?…" if request.query_string else ""
        self.logger.info(
            '%s "%s %s%s" %d %d %.3fs',
            request.remote or "-",
            request.method,
            request.path,
            query,
            response.status,
            response.body_length,
            time,
        )
