"""CORS for browsers: off unless origins are configured (`--cors-origin`, `CORS_ORIGINS`).

A small middleware rather than a dependency: it answers preflight `OPTIONS` requests itself
and adds `Access-Control-Allow-Origin` to every answer for an allowed origin, errors included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

__all__ = ["cors_middleware"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_DEFAULT_ALLOW_HEADERS = "Authorization, Content-Type"
_MAX_AGE = "600"


def cors_middleware(origins: Iterable[str]) -> Middleware:
    """Build the middleware for `origins` (exact `scheme://host[:port]` strings, or `*`)."""
    allowed = frozenset(o.rstrip("/") for o in origins)
    any_origin = "*" in allowed

    def allow_headers(origin: str) -> CIMultiDict[str] | None:
        if any_origin:
            return CIMultiDict({hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*"})
        if origin in allowed:
            return CIMultiDict({hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin, hdrs.VARY: "Origin"})
        return None

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return await handler(request)
        headers = allow_headers(origin)
        if headers is None:
            return await handler(request)
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = _ALLOW_METHODS
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = request.headers.get(
                hdrs.ACCESS_CONTROL_REQUEST_HEADERS, _DEFAULT_ALLOW_HEADERS
            )
            headers[hdrs.ACCESS_CONTROL_MAX_AGE] = _MAX_AGE
            return web.Response(status=204, headers=headers)
        headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = "*"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.extend(headers)
            raise
        if not response.prepared:
            response.headers.extend(headers)
        return response

    return middleware
